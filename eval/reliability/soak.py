"""Kill-and-restart soak of `persona serve`: fans talk concurrently while the server is killed with
SIGKILL at random moments and restarted, then every fan's stored history is checked.

Each fan sends its messages in order, each with an Idempotency-Key, and retries a message (same
key) after a cut connection, a 5xx, a 429 or a 503, as a careful front end would, until it gets a
200 or its attempts run out. A third of the fans use POST /v1/reply, a third the OpenAI route, a
third the OpenAI route streamed. The checker then reads every fan's history through the API and
verifies, for each fan:

- every message that got a 200 is stored exactly once, followed by exactly the reply the client
  received (a replay after a kill must return the stored reply, not a new one);
- no fan message is stored twice, and fan messages are stored in the order they were sent;
- no reply is stored without its fan message, and no fan message without its reply;
- nothing from one fan is in another fan's history.

    python3 eval/reliability/soak.py --persona target/debug/persona --artifact A.bin \
        --history H.sqlite3|postgres://... [--llm instant|faulty] [--fans 9] [--messages 20]
        [--seconds 120] [--kill-every 0.5 3] [--seed 1] [--json]
    python3 eval/reliability/soak.py --self-test   # the checker finds each kind of violation

Exits 1 on any violation. Loopback only; stops everything it started.
"""
import argparse
import json
import os
import random
import re
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

FAN_LINES = [
    "hey, how was your day?",
    "what are you having for dinner tonight",
    "i just got back from the gym, so tired lol",
    "did you watch anything good lately?",
    "good morning!! slept well?",
    "tell me something that made you smile today",
]
TAG = re.compile(r"\[soak (\S+) fan (\d+) msg (\d+)\]")
RETRYABLE = {429, 500, 502, 503, 504}


def fan_text(run, fan, msg, rng):
    return f"{rng.choice(FAN_LINES)} [soak {run} fan {fan} msg {msg}]"


def send(port, route, model, fan_id, text, key):
    """One attempt; returns (status, reply or None, replayed)."""
    headers = {"idempotency-key": key}
    if route == "reply":
        status, h, body = harness.request("127.0.0.1", port, "POST", "/v1/reply",
                                          {"fan_id": fan_id, "message": text}, headers)
        reply = json.loads(body)["reply"] if status == 200 else None
    else:
        stream = route == "stream"
        status, h, body = harness.request("127.0.0.1", port, "POST", "/v1/chat/completions",
                                          {"model": model, "user": fan_id, "stream": stream,
                                           "messages": [{"role": "user", "content": text}]}, headers)
        reply = None
        if status == 200 and stream:
            pieces = []
            for line in body.decode().splitlines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    for choice in json.loads(line[6:]).get("choices", []):
                        pieces.append(choice.get("delta", {}).get("content") or "")
            reply = "".join(pieces)
        elif status == 200:
            reply = json.loads(body)["choices"][0]["message"]["content"]
    return status, reply, h.get("idempotent-replayed") == "true"


def run_fan(port_of, model, run, fan, messages, deadline, rng, stats, lock, answered, sent):
    """One fan's conversation; fills `answered` with {msg index: reply} for every message that
    got a 200 and `sent` with {msg index: text}, as it goes."""
    route = ["reply", "chat", "stream"][fan % 3]
    fan_id = f"soak-{run}-{fan}"
    for msg in range(messages):
        text = fan_text(run, fan, msg, rng)
        sent[msg] = text
        # The same key for every fan's message `msg`: a key must be scoped to its fan.
        key = f"{run}-{msg}"
        for _ in range(40):
            if time.monotonic() > deadline:
                return
            try:
                status, reply, replayed = send(port_of(), route, model, fan_id, text, key)
            except ConnectionRefusedError:
                status, reply, replayed = "refused", None, False
            except OSError:
                # Cut mid-request: the kill landed while this request was in the server.
                status, reply, replayed = "cut", None, False
            with lock:
                stats["attempts"] += 1
                stats["status"][str(status)] = stats["status"].get(str(status), 0) + 1
                stats["replayed"] += int(replayed)
            if status == 200:
                answered[msg] = reply
                break
            if status not in ("cut", "refused") and status not in RETRYABLE:
                raise RuntimeError(f"fan {fan} msg {msg}: unexpected status {status}")
            time.sleep(rng.uniform(0.05, 0.3))


def check(run, fans, answered, histories, sent=None):
    """The checker, pure: `answered[fan]` is {msg: reply} of the 200s, `histories[fan]` the stored
    messages ([{from_creator, content}]), `sent[fan]` the texts sent ({msg: text}; optional).
    Returns a list of violations (strings)."""
    violations = []
    for fan in range(fans):
        stored = histories.get(fan, [])
        texts = (sent or {}).get(fan, {})
        seen, last = set(), -1
        for pos, m in enumerate(stored):
            if m["from_creator"]:
                if pos == 0 or stored[pos - 1]["from_creator"]:
                    violations.append(f"fan {fan}: reply at {pos} without its fan message")
                continue
            tag = TAG.search(m["content"])
            if not tag or tag.group(1) != run or int(tag.group(2)) != fan:
                violations.append(f"fan {fan}: foreign message at {pos}: {m['content']!r}")
                continue
            msg = int(tag.group(3))
            if msg in texts and m["content"] != texts[msg]:
                violations.append(f"fan {fan}: msg {msg} stored as {m['content']!r}, sent as {texts[msg]!r}")
            if msg in seen:
                violations.append(f"fan {fan}: msg {msg} stored twice")
            elif msg < last:
                violations.append(f"fan {fan}: msg {msg} stored after msg {last}")
            seen.add(msg)
            last = max(last, msg)
            if pos + 1 >= len(stored) or not stored[pos + 1]["from_creator"]:
                violations.append(f"fan {fan}: msg {msg} stored without its reply")
        for msg, reply in answered.get(fan, {}).items():
            places = [p for p, m in enumerate(stored) if not m["from_creator"]
                      and (t := TAG.search(m["content"])) and t.group(1) == run
                      and int(t.group(2)) == fan and int(t.group(3)) == msg]
            if not places:
                violations.append(f"fan {fan}: msg {msg} got a 200 but is not stored")
            elif places[0] + 1 < len(stored) and stored[places[0] + 1]["from_creator"] \
                    and stored[places[0] + 1]["content"] != reply:
                violations.append(f"fan {fan}: msg {msg}: stored reply differs from the one sent "
                                  f"({stored[places[0] + 1]['content']!r} != {reply!r})")
    return violations


def self_test():
    """Each kind of violation, planted in a clean history, must be found; the clean one passes."""
    run = "t"
    f = lambda fan, msg: {"from_creator": False, "content": f"hi [soak t fan {fan} msg {msg}]"}  # noqa: E731
    r = lambda text: {"from_creator": True, "content": text}  # noqa: E731
    clean = {0: [f(0, 0), r("a"), f(0, 1), r("b")], 1: [f(1, 0), r("c")]}
    answered = {0: {0: "a", 1: "b"}, 1: {0: "c"}}
    assert check(run, 2, answered, clean) == [], check(run, 2, answered, clean)
    cases = {
        "stored twice": {0: [f(0, 0), r("a"), f(0, 0), r("a"), f(0, 1), r("b")], 1: clean[1]},
        "stored after": {0: [f(0, 1), r("b"), f(0, 0), r("a")], 1: clean[1]},
        "without its fan message": {0: [f(0, 0), r("a"), r("x"), f(0, 1), r("b")], 1: clean[1]},
        "without its reply": {0: [f(0, 0), f(0, 1), r("b")], 1: clean[1]},
        "foreign": {0: clean[0] + [f(1, 0), r("c")], 1: clean[1]},
        "not stored": {0: [f(0, 0), r("a")], 1: clean[1]},
        "differs": {0: [f(0, 0), r("a"), f(0, 1), r("B")], 1: clean[1]},
    }
    sent = {0: {0: f(0, 0)["content"], 1: f(0, 1)["content"]}}
    altered = {0: [{"from_creator": False, "content": "hey [soak t fan 0 msg 0]"}, r("a"), f(0, 1), r("b")],
               1: clean[1]}
    assert any("sent as" in v for v in check(run, 2, answered, altered, sent)), "checker missed an altered text"
    for expected, histories in cases.items():
        found = check(run, 2, answered, histories)
        assert any(expected in v for v in found), f"checker missed '{expected}': {found}"
    print(f"soak checker self-test: clean history passes, {len(cases) + 1} planted violations found")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--self-test", action="store_true")
    p.add_argument("--persona")
    p.add_argument("--artifact")
    p.add_argument("--history")
    p.add_argument("--llm", choices=["instant", "faulty"], default="instant")
    p.add_argument("--fans", type=int, default=9)
    p.add_argument("--messages", type=int, default=20)
    p.add_argument("--seconds", type=float, default=120)
    p.add_argument("--kill-every", type=float, nargs=2, default=[0.5, 3.0])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true")
    o = p.parse_args()
    if o.self_test:
        return self_test()
    if not (o.persona and o.artifact and o.history):
        p.error("--persona, --artifact and --history are required")
    rng = random.Random(o.seed)
    run = f"{int(time.time())}{rng.randrange(1000):03d}"
    work = tempfile.mkdtemp(prefix="persona-soak-")
    stats = {"attempts": 0, "status": {}, "replayed": 0, "kills": 0}
    lock = threading.Lock()
    answered = {f: {} for f in range(o.fans)}
    sent = {f: {} for f in range(o.fans)}
    errors, done = [], threading.Event()
    started = time.monotonic()
    deadline = started + o.seconds
    llm = server = None
    histories = {}
    try:
        llm, llm_url = harness.start_llm(o.llm, seed=o.seed, stall=3, fault_rate=0.3)
        server = harness.Server(o.persona, [
            "--artifact", o.artifact, "--history", o.history, "--llm-url", llm_url, "--timeout", "1",
            "--rate-per-minute", "100000", "--client-rate-per-minute", "100000000", "--reload-every", "0",
            "--max-queue", "64", "--llm-concurrency", "4"], os.path.join(work, "serve.log"))
        server.start()
        model = json.loads(harness.request("127.0.0.1", server.port, "GET", "/v1/models")[2])["data"][0]["id"]

        def guarded(name, body):
            # An exception in a thread would otherwise vanish, and the run pass unchecked.
            def run_guarded():
                try:
                    body()
                except BaseException as e:  # noqa: BLE001
                    errors.append(f"{name}: {type(e).__name__}: {e}")
            return threading.Thread(target=run_guarded, daemon=True)

        threads = [guarded(f"fan {f}", lambda f=f: run_fan(
            lambda: server.port, model, run, f, o.messages, deadline,
            random.Random(o.seed * 1000 + f), stats, lock, answered[f], sent[f])) for f in range(o.fans)]
        for t in threads:
            t.start()

        def killer():
            while not done.wait(rng.uniform(*o.kill_every)):
                server.kill()
                stats["kills"] += 1
                server.start()

        k = guarded("killer", killer)
        k.start()
        for t in threads:
            t.join()
        done.set()
        k.join()
        # The histories are read from a server started after the last kill.
        server.kill()
        server.start()
        for fan in range(o.fans):
            status, _, body = harness.request("127.0.0.1", server.port, "GET", f"/v1/fans/soak-{run}-{fan}/messages")
            if status == 200:
                histories[fan] = json.loads(body)["messages"]
            elif status == 404:
                histories[fan] = []
            else:
                errors.append(f"reading fan {fan}'s history: status {status}")
    finally:
        done.set()
        if server:
            server.stop()
        harness.stop(llm)
    violations = check(run, o.fans, answered, histories, sent)
    if stats["kills"] == 0:
        errors.append("the server was never killed: the run proves nothing; give it more --seconds")
    if not any(answered.values()):
        errors.append("no message was answered: the run proves nothing")
    backend = "postgres" if o.history.startswith("postgres") else "sqlite"
    summary = {
        "backend": backend, "llm": o.llm, "fans": o.fans, "seconds": round(time.monotonic() - started, 1),
        "kills": stats["kills"], "attempts": stats["attempts"], "status": stats["status"],
        "replayed": stats["replayed"], "answered": sum(len(a) for a in answered.values()),
        "sent_messages": o.fans * o.messages,
        "stored_messages": sum(len(h) for h in histories.values()),
        "histories_checked": len(histories),
        "restart_s_median": round(sorted(server.starts)[len(server.starts) // 2], 2),
        "violations": len(violations),
    }
    if o.json:
        print(json.dumps(summary))
    else:
        print(f"soak {backend}/{o.llm}: {summary['fans']} fans, {summary['seconds']} s, {summary['kills']} kills "
              f"(restart median {summary['restart_s_median']} s), {summary['attempts']} requests "
              f"{summary['status']}, {summary['replayed']} replayed, {summary['answered']}/"
              f"{summary['sent_messages']} messages answered, {summary['histories_checked']} histories "
              f"checked ({summary['stored_messages']} stored messages), violations: {len(violations)}")
    for v in violations[:50]:
        print("VIOLATION", v, file=sys.stderr)
    for e in errors:
        print("ERROR", e, file=sys.stderr)
    if violations or errors:
        print(f"server log: {os.path.join(work, 'serve.log')}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
