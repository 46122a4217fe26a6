#!/usr/bin/env python3
"""Serve a local gguf through llama.cpp's OpenAI-compatible HTTP server.

Run with the python of the venv that scripts/setup-assets.sh creates
($CACHE/llm/venv, which has xllamacpp installed). Normally started by
scripts/llm.sh, not by hand.

Environment:
  PERSONA_LLM_PORT    port on 127.0.0.1 (default 8080)
  PERSONA_LOCAL_MODEL which installed model to serve, a key of MODELS below
                      (default: DEFAULT_MODEL); it is also the served model alias
  PERSONA_LLM_MODEL   a gguf path instead (served with that model's template)
  PERSONA_LLM_TEMPLATE a llama.cpp built-in chat template name instead of the model's
  PERSONA_CACHE_DIR  cache root (default ${XDG_CACHE_HOME:-~/.cache}/persona)

xllamacpp API used (version 2026.10.11549):
  params = xllamacpp.CommonParams()   # llama.cpp common_params
  params.model.path, .hostnames (list[str]), .port, .model_alias (set[str]),
  .n_ctx, .cpuparams.n_threads, .cpuparams_batch.n_threads, .n_parallel, ...
  server = xllamacpp.Server(params)   # loads the model, starts the HTTP
                                      # server in a C++ thread and returns
  server.listening_address            # e.g. "http://127.0.0.1:8080"
  del server                          # ~Server(): terminate main loop + join
"""

import os
import signal
import sys
import threading
import time

# name -> (gguf file under $CACHE/llm, chat template or None for the gguf's own).
# The Gemma 3 270M gguf is the base model and carries no chat template; with llama.cpp's
# "gemma" turn template it answered persona's prompts with code or nothing usable, with
# "chatml" in the creator's voice (eval/bench/models.sh; README "Which local model"), so chatml.
# SmolLM2 is the default because it scored higher voice fidelity on every held-out turn.
MODELS = {
    "smollm2-135m": ("SmolLM2-135M-Instruct.Q4_1.gguf", None),
    "gemma3-270m": ("gemma-3-270m-q4_k_m.gguf", "chatml"),
}
DEFAULT_MODEL = "smollm2-135m"


def cache_dir() -> str:
    d = os.environ.get("PERSONA_CACHE_DIR")
    if d:
        return d
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(xdg, "persona")


def log(msg: str) -> None:
    print(f"[llm_server] {msg}", file=sys.stderr, flush=True)


def main() -> int:
    port = int(os.environ.get("PERSONA_LLM_PORT", "8080"))
    name = os.environ.get("PERSONA_LOCAL_MODEL") or DEFAULT_MODEL
    if name not in MODELS:
        log(f"unknown PERSONA_LOCAL_MODEL {name!r}; choose one of {', '.join(MODELS)}")
        return 2
    file, template = MODELS[name]
    model = os.environ.get("PERSONA_LLM_MODEL") or os.path.join(cache_dir(), "llm", file)
    if not os.path.isfile(model):
        log(f"model not found: {model} (run scripts/setup-assets.sh --model {name})")
        return 2

    import xllamacpp as xlc

    params = xlc.CommonParams()
    params.model.path = model
    params.model_alias = {name}
    template = os.environ.get("PERSONA_LLM_TEMPLATE") or template
    if template:
        params.chat_template = template
    params.hostnames = ["127.0.0.1"]
    params.port = port
    params.n_ctx = 4096
    params.n_parallel = 1            # one slot: the whole 4096 context for it
    params.cpuparams.n_threads = 1
    params.cpuparams_batch.n_threads = 1
    params.n_threads_http = 2        # HTTP workers (not compute threads)
    params.offline = True            # never try a model hub
    params.ui = False                # no web UI, API only
    params.warmup = True

    # Ask the main thread to stop; the handler only sets a flag, the C++
    # server is torn down from the main thread below.
    stop = threading.Event()
    got = {}

    def on_signal(signum, _frame):
        got["sig"] = signum
        stop.set()

    # A signal during start-up (model loading) is remembered: the server is
    # shut down as soon as it is up.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    t0 = time.monotonic()
    log(f"xllamacpp {xlc.__version__}: loading {model}")
    try:
        server = xlc.Server(params)
    except Exception as e:  # bad params, port in use, model load failure
        log(f"failed to start server: {e}")
        return 1

    # llama.cpp's server init installs its own SIGINT/SIGTERM handlers
    # (process-wide sigaction). Re-install ours so that a signal reaches
    # Python and we shut down via the Server destructor, which terminates the
    # main loop and joins its thread.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    log(f"listening on {server.listening_address} (alias {name}, "
        f"ready in {time.monotonic() - t0:.1f}s, pid {os.getpid()})")
    if stop.is_set():
        log("signal received during start-up")

    # Signals may land on one of llama.cpp's threads; Python then runs our
    # handler in the main thread only when it next wakes up, so poll briefly.
    while not stop.wait(0.2):
        pass

    log(f"signal {got.get('sig')} received, shutting down")
    t0 = time.monotonic()
    del server  # ~Server(): stops the main loop and the HTTP server, joins threads
    log(f"stopped in {time.monotonic() - t0:.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
