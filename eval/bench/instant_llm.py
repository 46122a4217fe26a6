"""A stand-in LLM for load tests: an OpenAI-compatible /v1/chat/completions that answers at once
with a fixed in-voice line, so a load run measures persona's own work, not a model's.
Not for anything but measurement.

    python3 eval/bench/instant_llm.py PORT
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REPLY = {"choices": [{"index": 0, "message": {"role": "assistant",
         "content": "[[ ## output ## ]]\nmm hi petal... just steeping some oolong 🍵 how was your day?"},
         "finish_reason": "stop"}]}
BODY = json.dumps(REPLY).encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def do_GET(self):
        body = b'{"data": []}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
