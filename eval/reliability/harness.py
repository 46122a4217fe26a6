"""What the reliability runs share: free loopback ports, the stand-in LLM, starting, killing and
restarting `persona serve`, and a small HTTP client that never raises on a status code.

Everything listens on 127.0.0.1 only, and every process started here is stopped by `stop()`.
"""
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_llm(mode, **opts):
    """Starts eval/reliability/standin_llm.py; returns (process, base URL)."""
    port = free_port()
    args = [sys.executable, os.path.join(HERE, "standin_llm.py"), str(port), "--mode", mode]
    for key, value in opts.items():
        args += ["--" + key.replace("_", "-"), str(value)]
    proc = subprocess.Popen(args)
    wait_for(lambda: request("127.0.0.1", port, "GET", "/v1/models", timeout=1)[0] == 200, 10, "the stand-in LLM")
    return proc, f"http://127.0.0.1:{port}/v1"


def wait_for(check, seconds, what):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"{what} did not come up within {seconds} s")


def request(host, port, method, path, body=None, headers=None, timeout=30):
    """One HTTP request; returns (status, headers dict, body bytes). Raises OSError when the
    connection fails or is cut."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        data = json.dumps(body).encode() if body is not None else None
        h = {"content-type": "application/json"} if data is not None else {}
        h.update(headers or {})
        conn.request(method, path, body=data, headers=h)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    except http.client.HTTPException as e:
        raise ConnectionError(str(e)) from e
    finally:
        conn.close()


class Server:
    """`persona serve` on a fixed loopback port, restartable after SIGKILL."""

    def __init__(self, persona, args, log_path):
        self.persona, self.args, self.log_path = persona, args, log_path
        self.port = free_port()
        self.proc = None
        self.starts = []

    def start(self):
        log = open(self.log_path, "ab")
        started = time.monotonic()
        self.proc = subprocess.Popen([self.persona, "serve", "--addr", f"127.0.0.1:{self.port}", *self.args],
                                     stdout=log, stderr=log)
        log.close()

        def up():
            if self.proc.poll() is not None:
                raise SystemExit(f"persona serve exited with {self.proc.returncode}; see {self.log_path}")
            return request("127.0.0.1", self.port, "GET", "/healthz", timeout=2)[0] == 200

        wait_for(up, 60, "persona serve")
        self.starts.append(time.monotonic() - started)

    def kill(self):
        """SIGKILL, as a crash or an OOM killer would: no shutdown code runs."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def rss_kib(self):
        """The server's resident memory now, from /proc."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0


def stop(*procs):
    for p in procs:
        if p is not None and p.poll() is None:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
