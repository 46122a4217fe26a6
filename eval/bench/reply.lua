-- wrk script: POST /v1/reply as many different fans, so the per-fan rate limit is not what is measured.
local counter = 0
request = function()
  counter = counter + 1
  local body = string.format('{"fan_id":"load-%d","message":"hey wren, how was your day? %d"}', counter % 500, counter)
  return wrk.format("POST", "/v1/reply", {["content-type"] = "application/json"}, body)
end
