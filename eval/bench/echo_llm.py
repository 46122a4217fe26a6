"""A stand-in LLM for the worst possible model: it answers every chat completion with its whole
prompt (every message, system included, with the [[ ## ... ## ]] markers removed and the lines
joined into one paragraph, so the reply parser keeps all of it). The prompt-injection run uses it
to show that nothing of the prompt, no violation and no other fan's data reaches a fan even then.
Not for anything but that measurement and the tests.

    python3 eval/bench/echo_llm.py PORT
"""
import json
import re
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MARKER = re.compile(r"\[\[ ## \w+ ## \]\]")


def echo(messages):
    text = " ".join(m.get("content", "") for m in messages)
    text = MARKER.sub(" ", text)
    return "[[ ## output ## ]]\n" + " ".join(text.split())


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        reply = {"choices": [{"index": 0, "message": {"role": "assistant",
                 "content": echo(body.get("messages", []))}, "finish_reason": "stop"}],
                 "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}
        out = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def do_GET(self):
        out = b'{"data": []}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
