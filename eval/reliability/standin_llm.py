"""A stand-in LLM for reliability and load runs, not for anything else: an OpenAI-compatible
/v1/chat/completions that answers at once with a short in-voice line, or, in `faulty` mode,
misbehaves on a share of requests the way real model servers do: it stalls past the client's
timeout, returns 500, returns garbage (not JSON, JSON without choices, a reply without the output
field), or drops the connection. In `slow` mode every answer takes --delay seconds, so a run can
fill the server's queue.

    python3 eval/reliability/standin_llm.py PORT [--mode instant|faulty|slow]
        [--fault-rate 0.3] [--stall 5] [--delay 2] [--seed 1]
"""
import argparse
import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LINES = [
    "mm hi petal... just steeping some oolong 🍵 how was your day?",
    "haha stop it, you're making me blush 🙈",
    "ugh mondays... tell me something nice",
    "omg yes, that sounds so cozy",
    "you always know what to say 💕",
]
# Endings make replies vary (240 combinations), so a checker comparing a replayed reply with the
# stored one is not fooled by a fresh reply that happens to match.
ENDINGS = ["tell me more", "what about you?", "hehe", "anyway...", "so cozy", "ok ok", "you first",
           "promise?", "lol", "mm hm", "right??", "aww"]
EMOJI = ["", " 💕", " 🙈", " ✨"]
FAULTS = ["stall", "500", "not_json", "no_choices", "no_field", "drop"]


def completion(content):
    return json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                    "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 100, "completion_tokens": 12, "total_tokens": 112}}).encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def send(self, status, body, content_type="application/json"):
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        opts = self.server.opts
        with self.server.lock:
            fault = self.server.rng.random() < opts.fault_rate if opts.mode == "faulty" else False
            kind = self.server.rng.choice(FAULTS) if fault else None
            rng = self.server.rng
            line = f"{rng.choice(LINES)} {rng.choice(ENDINGS)}{rng.choice(EMOJI)}"
        if opts.mode == "slow":
            time.sleep(opts.delay)
        if kind == "stall":
            time.sleep(opts.stall)
        elif kind == "500":
            return self.send(500, b'{"error": {"message": "stand-in fault"}}')
        elif kind == "not_json":
            return self.send(200, b"<html>bad gateway</html>", "text/html")
        elif kind == "no_choices":
            return self.send(200, b'{"object": "chat.completion"}')
        elif kind == "no_field":
            return self.send(200, completion("As an AI language model I cannot"))
        elif kind == "drop":
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.send(200, completion("[[ ## output ## ]]\n" + line))

    def do_GET(self):
        self.send(200, b'{"object": "list", "data": []}')

    def log_message(self, *args):
        pass


def main():
    p = argparse.ArgumentParser()
    p.add_argument("port", type=int)
    p.add_argument("--mode", choices=["instant", "faulty", "slow"], default="instant")
    p.add_argument("--fault-rate", type=float, default=0.3)
    p.add_argument("--stall", type=float, default=5.0)
    p.add_argument("--delay", type=float, default=2.0)
    p.add_argument("--seed", type=int, default=1)
    opts = p.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", opts.port), Handler)
    server.daemon_threads = True
    # A client that hangs up (a killed server) is part of the runs, not an error worth a traceback.
    server.handle_error = lambda request, address: None
    server.opts, server.rng, server.lock = opts, random.Random(opts.seed), threading.Lock()
    server.serve_forever()


if __name__ == "__main__":
    main()
