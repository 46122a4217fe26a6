"""Overload run of `persona serve`: far more concurrent fans than `--max-queue`, against a stand-in
LLM that takes --delay seconds per answer, so the queue is always full.

For each load level it reports how the requests ended (200, 503 queue full, 429 rate limit, ...),
how fast refusals come back (p50/p99), the server's resident memory (idle, and peak under load,
sampled from /proc), and after the load stops, how long until a fan gets a 200 again.

    python3 eval/reliability/overload.py --persona target/debug/persona --artifact A.bin \
        [--levels 100 400] [--seconds 15] [--max-queue 8] [--delay 1] [--json]

Exits 1 if refusals are slow (median over 250 ms), a request fails in a way other than a status code
the server documents for overload, or the server does not answer again within 3x --delay after
the load. Loopback only; stops everything it started.
"""
import argparse
import json
import os
import random
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

REFUSED = {429, 503}


def percentile(values, q):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def load(server, level, seconds, run):
    """`level` fans at once, each sending until the time is up and, after a refusal, waiting what
    the server's Retry-After says (with jitter), as a well-behaved client does; returns the
    outcomes and the peak RSS."""
    outcomes, lock = [], threading.Lock()
    stop_at = time.monotonic() + seconds
    peak = [server.rss_kib()]

    def fan(i):
        rng = random.Random(i)
        n = 0
        while time.monotonic() < stop_at:
            started = time.monotonic()
            retry_after = 1.0
            try:
                status, headers, _ = harness.request(
                    "127.0.0.1", server.port, "POST", "/v1/reply",
                    {"fan_id": f"load-{run}-{level}-{i}", "message": f"hey there #{n}"}, timeout=60)
                retry_after = float(headers.get("retry-after", retry_after))
            except OSError as e:
                status = f"error: {type(e).__name__}"
            with lock:
                outcomes.append((status, time.monotonic() - started))
            n += 1
            if status in REFUSED:
                time.sleep(retry_after * rng.uniform(0.5, 1.5))

    threads = [threading.Thread(target=fan, args=(i,), daemon=True) for i in range(level)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        peak[0] = max(peak[0], server.rss_kib())
        time.sleep(0.2)
    return outcomes, peak[0]


def recovery(server, run, delay):
    """Seconds from the end of the load until a fresh fan gets a 200."""
    started = time.monotonic()
    while time.monotonic() - started < 30:
        try:
            status, _, _ = harness.request("127.0.0.1", server.port, "POST", "/v1/reply",
                                           {"fan_id": f"after-{run}", "message": "hi, you there?"}, timeout=60)
        except OSError:
            status = None
        if status == 200:
            return time.monotonic() - started
        time.sleep(0.1)
    return None


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--persona", required=True)
    p.add_argument("--artifact", required=True)
    p.add_argument("--levels", type=int, nargs="+", default=[100, 400])
    p.add_argument("--seconds", type=float, default=15)
    p.add_argument("--max-queue", type=int, default=8)
    p.add_argument("--delay", type=float, default=1.0)
    p.add_argument("--json", action="store_true")
    o = p.parse_args()
    work = tempfile.mkdtemp(prefix="persona-overload-")
    run = str(int(time.time()))
    results, failures = [], []
    llm = server = None
    try:
        llm, llm_url = harness.start_llm("slow", delay=o.delay)
        # The LLM timeout is far above the wait at the back of the queue (max-queue / 2 answers at
        # a time x delay), so a busy machine gives no 504.
        server = harness.Server(o.persona, [
            "--artifact", o.artifact, "--history", os.path.join(work, "h.sqlite3"), "--llm-url", llm_url,
            "--timeout", str(o.delay * 20), "--rate-per-minute", "100000", "--client-rate-per-minute", "100000000",
            "--max-queue", str(o.max_queue), "--llm-concurrency", "2", "--reload-every", "0"],
            os.path.join(work, "serve.log"))
        server.start()
        harness.request("127.0.0.1", server.port, "POST", "/v1/reply", {"fan_id": f"warm-{run}", "message": "hi"})
        idle = server.rss_kib()
        for level in o.levels:
            outcomes, peak = load(server, level, o.seconds, run)
            back = recovery(server, run, o.delay)
            counts = {}
            for status, _ in outcomes:
                counts[str(status)] = counts.get(str(status), 0) + 1
            refused = [t for s, t in outcomes if s in REFUSED]
            served = [t for s, t in outcomes if s == 200]
            r = {
                "fans": level, "seconds": o.seconds, "max_queue": o.max_queue, "llm_delay_s": o.delay,
                "requests": len(outcomes), "status": counts,
                "refused_p50_ms": round(1000 * percentile(refused, 0.5), 1) if refused else None,
                "refused_p99_ms": round(1000 * percentile(refused, 0.99), 1) if refused else None,
                "served_p50_s": round(percentile(served, 0.5), 2) if served else None,
                "idle_rss_mib": round(idle / 1024, 1), "peak_rss_mib": round(peak / 1024, 1),
                "recovered_after_s": round(back, 2) if back is not None else None,
            }
            results.append(r)
            odd = {s for s, _ in outcomes if s not in REFUSED and s != 200}
            if odd:
                failures.append(f"{level} fans: requests ended otherwise than 200/429/503: {sorted(map(str, odd))}")
            if not refused:
                failures.append(f"{level} fans: nothing was refused; the load did not exceed the queue")
            elif percentile(refused, 0.5) > 0.25:
                # The median, not the tail: on a starved machine the tail is TCP retrying a
                # connection the accept loop had no CPU to take, not the server's queue.
                failures.append(f"{level} fans: refusals are slow (p50 {percentile(refused, 0.5):.2f} s)")
            if back is None or back > 3 * o.delay:
                failures.append(f"{level} fans: no 200 within {3 * o.delay} s after the load")
    finally:
        if server:
            server.stop()
        harness.stop(llm)
    for r in results:
        if o.json:
            print(json.dumps(r))
        else:
            print(f"overload {r['fans']} fans x {r['seconds']} s (max-queue {r['max_queue']}, LLM {r['llm_delay_s']} s/answer): "
                  f"{r['requests']} requests {r['status']}; refused p50 {r['refused_p50_ms']} ms, p99 {r['refused_p99_ms']} ms; "
                  f"served p50 {r['served_p50_s']} s; RSS idle {r['idle_rss_mib']} MiB, peak {r['peak_rss_mib']} MiB; "
                  f"200 again after {r['recovered_after_s']} s")
    for f in failures:
        print("FAIL", f, file=sys.stderr)
    if failures:
        print(f"server log: {os.path.join(work, 'serve.log')}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
