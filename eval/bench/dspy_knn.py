#!/usr/bin/env python3
"""DSPy's KNNFewShot over the data persona compiles, timed in one process.

Builds `dspy.KNNFewShot` over `training_data/conversations.json` with, as DSPy's vectorizer,
the same all-MiniLM-L6-v2 int8 ONNX model persona uses (from `$PERSONA_CACHE_DIR/assets/`,
run through `onnxruntime` + `tokenizers` from PyPI, the way fastembed runs it: tokenizer
truncation 256, padding to the longest text of the batch, mean pooling over the attention
mask, L2 normalization, batches of 32, graph optimization level 3, `--threads` intra-op
threads). The LLM is DSPy's `DummyLM`: no network.

The examples are persona's (src/dataset.rs, src/compile.rs): every creator message that follows
at least one message is an example whose input is the chat history before it, rendered as
persona renders it for embedding (`THE FAN: ...` / `YOU: ...`, the last `--window` messages,
newest kept first within 900 characters), with persona's hold-out (whole conversations by
sha256 of their content, fraction 0.2) and duplicate rule, so DSPy indexes the same 462 turns
persona does on this repository's data. Persona also keeps out replies its topic filter blocks;
that filter is not reproduced here (it excludes 0 replies on this data: compare `examples` with
`persona compile --json`).

What is timed (time.perf_counter):
  raw      the vectorizer alone on the exact texts KNN embeds (`chat_history: <history>`), turns/s
  compile  `KNNFewShot(k, trainset, vectorizer)` + `.compile(student)`: DSPy embeds the whole
           trainset in `KNN.__init__` (inside KNNFewShot's constructor); `compile()` itself only
           wraps the student's forward. Embedder caching off (like `persona compile --no-cache`);
           the model is loaded before the clock starts, as in persona.
  cached   the same with DSPy's default `Embedder(caching=True)` (memory cache only; the disk
           cache is switched off so nothing is written to ~/.dspy_cache): a first build fills
           the cache, a second one reads it. DSPy keys that cache on the callable's source
           text and the inputs, not on the model, so a different model behind the same wrapper
           function would be served stale vectors (from ~/.dspy_cache across processes).
           Skipped with --no-cached; across processes, with the disk cache, see --fresh.
  knn      per question, `KNN(chat_history=...)`: what KNNFewShot's forward calls to pick demos
           (embeds the query, dot product with every trainset vector, full argsort: exact brute
           force), split into time inside the model call and the rest. The rest is also
           re-timed alone (numpy dot + argsort): right after an ONNX Runtime run it is slower,
           as ONNX Runtime's intra-op threads spin-wait by default and compete with numpy's
           BLAS threads (on 2 cores, 5,000 x 384: ~4 ms instead of ~0.25 ms).
  forward  per question, the compiled program's whole forward with DummyLM: KNN, then a fresh
           BootstrapFewShot over the k neighbours, which (with its default arguments) runs the
           student on each of them and uses those LM outputs as the demos, then the final call;
           time inside DummyLM is reported separately. Again with max_bootstrapped_demos=0, where
           the demos are the neighbours' gold replies and there is one LM call.
  fresh    a new process's time to its first demos: DSPy keeps the trainset vectors only in
           memory, so every process start re-embeds the trainset (import + model load +
           compile + first KNN call, summed from the timings above).

`--scale N` replicates the trainset to N examples (example i >= base count is a base example
with " #i" appended to its history). Embedding N texts with this model takes about N / (raw
turns/s) seconds here: ~N/240 s on 2 cores for the short synthetic turns of `cargo bench
--bench compile`, several times longer for this data's 4-message histories (the `raw` figure
says how long here), so by default the replicated trainset's vectors
are the base example's real MiniLM vector plus small Gaussian noise, renormalized (printed as
`synthetic vectors`); the compile figure at scale then measures DSPy's own overhead and the
embedding time is estimated from the raw throughput. Queries are always embedded for real, so
the knn figures at scale are real: real query embedding, exact search over N vectors.
`--scale-embed` embeds all N texts for real instead (slow).

`--make-dataset N OUT` only writes N real-like examples in the conversations.json format (see
make_dataset; dspy-compare.sh --examples). The main run then reads them with `--data OUT
--holdout 0 --questions-data training_data/conversations.json --questions-holdout 0.2`: the
trainset is all of OUT, the questions are the real data's held-out fan messages.

`--fresh --cache-dir DIR --launched-at T` only times one new process to its first demos with
DSPy's default `Embedder(embed)` (caching=True) and its disk cache in DIR (see fresh): run it
on an empty DIR (cold: embeds the trainset and writes it to DIR), then again on the same DIR
(warm: reads the trainset vectors back). DSPy keys each cached batch (Embedder's batch_size,
200 texts) on sha256 of the callable's source text, the batch's texts in order and the call's
kwargs (dspy/clients/cache.py Cache.cache_key, request_cache; dspy/clients/embedding.py
_cached_compute_embeddings), so a callable's vectors are cached like a litellm model's, but
under its source, not its model.

Prints a Markdown table, then one line of JSON with every figure (last line of stdout).
`--questions-out FILE` writes the questions used (one JSON string per line) for persona's half;
`--vectors-out FILE.npz` this vectorizer's vectors of persona's own texts (no `chat_history: `
prefix; computed after the timings), for `--parity`, which compares them with the demo scores
`persona ask --json` reports, to show both sides embed the same way.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import json
import os
import re
import statistics
import struct
import sys
import time
from pathlib import Path

# Progress bars from BootstrapFewShot would write one line per question.
os.environ.setdefault("TQDM_DISABLE", "1")

EMBED_CHAR_BUDGET = 900  # src/transcript.rs
CREATOR_TAG = "YOU"
FAN_TAG = "THE FAN"


# ------------------------------------------------------------------ data (as persona) ----
def line(message: dict) -> str:
    tag = CREATOR_TAG if message["from_creator"] else FAN_TAG
    return f"{tag}: {' '.join(message['content'].split())}"


def embedding_text(history: list[dict], window: int) -> str:
    """src/transcript.rs embedding_text; window 0 = every message (still within the budget)."""
    start = 0 if window <= 0 else max(0, len(history) - window)
    lines: list[str] = []
    used = 0
    for message in reversed(history[start:]):
        text = line(message)
        n = len(text) + 1
        if lines and used + n > EMBED_CHAR_BUDGET:
            break
        used += n
        lines.append(text)
    lines.reverse()
    return "\n".join(lines)


def conversation_hash(messages: list[dict]) -> bytes:
    h = hashlib.sha256()
    for m in messages:
        content = m["content"].encode("utf-8")
        h.update(bytes([1 if m["from_creator"] else 0]))
        h.update(struct.pack("<Q", len(content)))
        h.update(content)
    return h.digest()


def is_held_out(messages: list[dict], fraction: float) -> bool:
    head = int.from_bytes(conversation_hash(messages)[:8], "big")
    return head / 2.0**64 < fraction


def load_examples(path: Path, window: int, holdout: float):
    """(train, heldout): lists of (history_text, reply, conversation index, turn)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    train, heldout, seen = [], [], set()
    duplicates = 0
    for c, item in enumerate(data):
        messages = item["chat_history"]["messages"]
        if item.get("output") is not None:  # `output` is the creator's last reply
            messages = messages + [{"from_creator": True, "content": item["output"]}]
        # persona parses `output` into the conversation's messages the same way (src/dataset.rs);
        # its hold-out hash is over those messages.
        held = is_held_out(messages, holdout)
        for t, m in enumerate(messages):
            if not m["from_creator"] or t == 0:
                continue
            text = embedding_text(messages[:t], window)
            key = (text, m["content"].strip())
            if key in seen:
                duplicates += 1
                continue
            seen.add(key)
            (heldout if held else train).append((text, m["content"], c, t, messages[:t]))
    return train, heldout, duplicates, len(data)


# ---------------------------------------------------------------- the MiniLM vectorizer ----
class MiniLM:
    """all-MiniLM-L6-v2 as fastembed runs it for persona (see the module docstring)."""

    def __init__(self, model_dir: Path, threads: int, batch: int = 32, max_length: int = 256):
        import numpy as np
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.np = np
        self.batch = batch
        cfg = json.loads((model_dir / "config.json").read_text())
        tok_cfg = json.loads((model_dir / "tokenizer_config.json").read_text())
        pad_token = tok_cfg.get("pad_token", "[PAD]")
        if isinstance(pad_token, dict):
            pad_token = pad_token.get("content", "[PAD]")
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        pad_id = cfg.get("pad_token_id")
        if pad_id is None:
            pad_id = self.tokenizer.token_to_id(pad_token) or 0
        max_len = min(max_length, int(float(tok_cfg.get("model_max_length", max_length))))
        # tokenizer.json says "pad to 128, truncate at 128"; fastembed replaces both.
        self.tokenizer.enable_truncation(max_length=max_len)
        self.tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token)  # to the batch's longest
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            str(model_dir / "model.onnx"), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self.input_names = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        self.output = "last_hidden_state" if "last_hidden_state" in outputs else outputs[0]
        self.calls = 0
        self.seconds = 0.0  # time spent inside __call__, for the knn split
        self.last_seconds = 0.0
        self.tokens = 0  # real (unpadded) tokens seen
        self.texts = 0  # texts embedded (for --fresh: how many the DSPy cache did not serve)

    def __call__(self, texts):
        np = self.np
        t0 = time.perf_counter()
        out = []
        for i in range(0, len(texts), self.batch):
            encodings = self.tokenizer.encode_batch(list(texts[i : i + self.batch]))
            ids = np.array([e.ids for e in encodings], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
            feeds = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self.input_names:
                feeds["token_type_ids"] = np.array([e.type_ids for e in encodings], dtype=np.int64)
            hidden = self.session.run([self.output], feeds)[0]
            self.tokens += int(mask.sum())
            self.texts += len(encodings)
            if hidden.ndim == 3:
                m = mask[:, :, None].astype(np.float32)
                pooled = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
            else:
                pooled = hidden
            norms = np.sqrt((pooled * pooled).sum(axis=1, keepdims=True))
            out.append((pooled / (norms + 1e-12)).astype(np.float32))
        result = np.concatenate(out, axis=0) if out else np.zeros((0, 384), dtype=np.float32)
        dt = time.perf_counter() - t0
        self.calls += 1
        self.seconds += dt
        self.last_seconds = dt
        return result


class ScaledVectorizer:
    """For --scale without --scale-embed: trainset texts get their base example's real vector
    plus N(0, sigma^2) noise per dimension, renormalized; anything else (queries) is embedded
    for real. `synthetic` is switched off once the trainset is embedded."""

    def __init__(self, real: MiniLM, base: dict, sigma: float, seed: int):
        import numpy as np

        self.np = np
        self.real = real
        self.base = base  # DSPy's text for a base example -> its real vector
        self.sigma = sigma
        self.rng = np.random.default_rng(seed)
        self.synthetic = True
        self.last_seconds = 0.0

    def __call__(self, texts):
        np = self.np
        if not self.synthetic:
            v = self.real(texts)
            self.last_seconds = self.real.last_seconds
            return v
        t0 = time.perf_counter()
        rows = []
        for text in texts:
            root = SUFFIX.sub("", text)
            v = self.base[root]
            if root != text:
                v = v + self.rng.normal(0.0, self.sigma, v.shape).astype(np.float32)
                v = v / np.linalg.norm(v)
            rows.append(v)
        self.last_seconds = time.perf_counter() - t0
        return np.stack(rows).astype(np.float32)


SUFFIX = re.compile(r" #\d+$")


def dspy_text(history_text: str) -> str:
    """What dspy.predict.knn.KNN embeds for an example whose one input is chat_history."""
    return f"chat_history: {history_text}"


# ------------------------------------------------------------------------------ stats ----
def pct(values, q):
    import numpy as np

    return float(np.percentile(np.array(values, dtype=np.float64), q)) if values else float("nan")


def ms_stats(seconds: list[float]) -> dict:
    ms = [s * 1000.0 for s in seconds]
    return {
        "n": len(ms),
        "median_ms": pct(ms, 50),
        "p90_ms": pct(ms, 90),
        "mean_ms": statistics.fmean(ms) if ms else float("nan"),
        "first_ms": ms[0] if ms else float("nan"),
    }


def r(x, nd=3):
    return None if x is None or x != x else round(x, nd)


# ------------------------------------------------------------------------------- main ----
def parse_args(argv):
    cache = os.environ.get("PERSONA_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "persona"
    )
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="training_data/conversations.json")
    p.add_argument("--model-dir", default=os.path.join(cache, "assets", "all-MiniLM-L6-v2"))
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="ONNX Runtime intra-op threads (default: one per core, as persona)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--k", type=int, default=3, help="demos per question (persona's default k)")
    p.add_argument("--window", type=int, default=4,
                   help="messages of history per example, as persona's retrieval.context_messages; 0 = all")
    p.add_argument("--holdout", type=float, default=0.2)
    p.add_argument("--questions", type=int, default=50)
    p.add_argument("--scale", type=int, default=0, help="replicate the trainset to N examples")
    p.add_argument("--scale-embed", action="store_true", help="with --scale, embed all N texts for real")
    p.add_argument("--noise", type=float, default=0.02, help="per-dimension sigma of the --scale noise")
    p.add_argument("--no-cached", action="store_true", help="skip the Embedder(caching=True) pair")
    p.add_argument("--no-forward", action="store_true", help="skip the full forward with DummyLM")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--questions-out")
    p.add_argument("--vectors-out")
    p.add_argument("--parity", nargs=2, metavar=("VECTORS_NPZ", "PERSONA_JSONL"),
                   help="only compare saved DSPy scores with `persona ask --json` demo scores")
    p.add_argument("--questions-data", help="draw the questions from this file's held-out conversations "
                   "instead of --data's (used with a --make-dataset trainset and --holdout 0)")
    p.add_argument("--questions-holdout", type=float, default=None,
                   help="hold-out fraction for --questions-data, and the part of --data --make-dataset "
                        "leaves out (default: --holdout)")
    p.add_argument("--make-dataset", nargs=2, metavar=("N", "OUT_JSON"),
                   help="only write N real-like examples recombined from --data (see make_dataset)")
    p.add_argument("--fresh", action="store_true",
                   help="only time one new process to its first demos with DSPy's disk cache in --cache-dir")
    p.add_argument("--cache-dir", help="with --fresh: DSPy's disk cache directory")
    p.add_argument("--launched-at", type=float, help="with --fresh: epoch seconds when the process was started")
    p.add_argument("--question-index", type=int, default=0, help="with --fresh: which question to ask")
    return p.parse_args(argv)


def parity(npz_path: str, jsonl_path: str) -> int:
    import numpy as np

    saved = np.load(npz_path)
    train, queries = saved["train"], saved["queries"]
    worst, checked, answers, top_agree = 0.0, 0, 0, 0
    with open(jsonl_path, encoding="utf-8") as f:
        for qi, raw in enumerate(f):
            raw = raw.strip()
            if not raw or qi >= len(queries):
                continue
            answers += 1
            demos = json.loads(raw).get("demos", [])
            scores = train @ queries[qi]
            for d in demos:
                worst = max(worst, abs(float(scores[d["id"]]) - float(d["score"])))
                checked += 1
            if demos and int(np.argmax(scores)) in {d["id"] for d in demos}:
                top_agree += 1
    print(json.dumps({"parity_answers": answers, "parity_demos_checked": checked,
                      "parity_max_abs_score_diff": round(worst, 6),
                      "parity_dspy_top1_among_persona_demos": top_agree}))
    return 0


def pick_questions(args, heldout) -> list[str]:
    """The fan message right before each held-out creator turn, alone (as `persona ask
    "<question>"` sees it: a one-message history, embedded as `THE FAN: <question>`). With
    `--questions-data` they come from that file's held-out conversations (at
    `--questions-holdout`), not from the trainset's file."""
    if args.questions_data:
        _, heldout, _, _ = load_examples(Path(args.questions_data), args.window, args.questions_holdout)
    questions, seen_q = [], set()
    for (_, _, _, _, hist) in heldout:
        last = hist[-1]
        q = " ".join(last["content"].split())
        if not last["from_creator"] and q and q not in seen_q and not q.startswith("-"):
            seen_q.add(q)
            questions.append(q)
        if len(questions) >= args.questions:
            break
    return questions


MAX_MESSAGE_CHARS = 4000  # src/conversation/mod.rs


def make_dataset(args, n: int, out_path: str) -> int:
    """Writes a conversations.json-format file with exactly `n` examples (after persona's duplicate
    rule, with no hold-out), recombined from the real data like benches/scale.rs: each synthetic
    conversation is a real conversation from `--data`'s indexed part (hold-out
    `--questions-holdout`, so the held-out questions stay unseen) whose every fan message is
    joined with another real fan message drawn at random, with the creator's real replies in their
    real places. The last one is cut after the creator turn that makes `n`. Fixed `--seed`."""
    import random

    data = json.loads(Path(args.data).read_text(encoding="utf-8"))
    sources = []
    for item in data:
        messages = item["chat_history"]["messages"] + [{"from_creator": True, "content": item["output"]}]
        messages = [{"from_creator": bool(m["from_creator"]), "content": m["content"]} for m in messages]
        if not is_held_out(messages, args.questions_holdout):
            sources.append((item.get("fan"), messages))
    pool = [m["content"].strip() for _, ms in sources for m in ms if not m["from_creator"] and m["content"].strip()]
    if not sources or not pool:
        sys.exit(f"dspy_knn: {args.data} has no indexed conversation with a fan message to recombine")
    rng = random.Random(args.seed)
    seen, out, total, tries = set(), [], 0, 0
    while total < n:
        tries += 1
        if tries > 100 * n + 1000:
            sys.exit(f"dspy_knn: could not make {n} distinct examples from {args.data}")
        fan, messages = rng.choice(sources)
        new = []
        for m in messages:
            if m["from_creator"]:
                new.append(dict(m))
                continue
            joined = f"{m['content'].strip()} {rng.choice(pool)}"
            new.append({"from_creator": False,
                        "content": joined if len(joined) <= MAX_MESSAGE_CHARS else m["content"]})
        added, end = 0, None
        for t, m in enumerate(new):
            if not m["from_creator"] or t == 0:
                continue
            key = (embedding_text(new[:t], args.window), m["content"].strip())
            if key in seen:
                continue
            seen.add(key)
            added += 1
            if total + added == n:
                end = t
                break
        if not added:
            continue
        if end is not None:
            new = new[: end + 1]
        total += added
        item = {"id": f"s{len(out)}", "chat_history": {"messages": new[:-1]}, "output": new[-1]["content"]}
        if fan is not None:
            item["fan"] = fan
        out.append(item)
    Path(out_path).write_text(json.dumps(out, ensure_ascii=False), encoding="utf-8")
    print(json.dumps({"examples": total, "conversations": len(out), "source_conversations": len(sources),
                      "fan_messages_pool": len(pool), "seed": args.seed, "path": out_path}))
    return 0


def reply_student(dspy):
    """The program KNNFewShot compiles: one Predict over persona's inputs."""

    class Reply(dspy.Signature):
        """You are the creator chatting with a fan; answer in the creator's own voice."""

        chat_history: str = dspy.InputField(desc="the chat history, oldest first; YOU are the creator")
        output: str = dspy.OutputField(desc="the creator's next message")

    return dspy.Predict(Reply)


def fresh(args) -> int:
    """One new DSPy process, timed from its launch (`--launched-at`, epoch seconds taken by the
    caller just before starting it) to its first demos, with DSPy's default
    `Embedder(embed)` (caching=True) and its disk cache in `--cache-dir`: empty, the process
    embeds the trainset and fills the cache; filled by an earlier process, it reads the trainset
    vectors back instead. Then its peak RSS. Prints one line of JSON."""
    import resource

    launched = args.launched_at if args.launched_at is not None else time.time()
    t = time.perf_counter()
    import dspy
    from dspy.teleprompt import KNNFewShot

    import_s = time.perf_counter() - t
    # DSPy's default cache (memory + disk, 30 GB limit), only in a chosen directory.
    dspy.configure_cache(enable_disk_cache=True, enable_memory_cache=True, disk_cache_dir=args.cache_dir)

    model_dir = Path(args.model_dir)
    if not (model_dir / "model.onnx").is_file():
        sys.exit(f"dspy_knn: no model at {model_dir}/model.onnx; run `bash scripts/setup-assets.sh --no-llm`")
    t = time.perf_counter()
    base, heldout, _, _ = load_examples(Path(args.data), args.window, args.holdout)
    questions = pick_questions(args, heldout)
    if not base or not questions:
        sys.exit("dspy_knn: no examples or no questions")
    question = questions[args.question_index % len(questions)]
    trainset = [dspy.Example(chat_history=b[0], output=b[1]).with_inputs("chat_history") for b in base]
    data_s = time.perf_counter() - t

    t = time.perf_counter()
    model = MiniLM(model_dir, args.threads, args.batch)
    model_load_s = time.perf_counter() - t

    # DSPy's cache key holds this function's source text (dspy/clients/cache.py _transform_value),
    # not the model it calls: the cold and warm processes run the same source, so the keys match.
    def embed(texts):
        return model(texts)

    t = time.perf_counter()
    knn_fs = KNNFewShot(args.k, trainset, vectorizer=dspy.Embedder(embed))  # caching=True is the default
    knn_fs.compile(reply_student(dspy))
    build_s = time.perf_counter() - t
    trainset_texts_embedded = model.texts
    t = time.perf_counter()
    demos = knn_fs.KNN(chat_history=f"{FAN_TAG}: {question}")
    first_knn_s = time.perf_counter() - t
    to_first_demos_s = time.time() - launched
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    assert len(demos) == min(args.k, len(base))
    entries = len(dspy.cache.disk_cache)
    size = sum(f.stat().st_size for f in Path(args.cache_dir).rglob("*") if f.is_file())
    print(json.dumps({
        "examples": len(base),
        "question_index": args.question_index,
        "launch_to_first_demos_seconds": r(to_first_demos_s),
        "in_process_seconds": {"import": r(import_s), "data": r(data_s), "model_load": r(model_load_s),
                               "knn_build_and_compile": r(build_s), "first_knn_call": r(first_knn_s)},
        "trainset_texts_embedded": trainset_texts_embedded,
        "query_texts_embedded": model.texts - trainset_texts_embedded,
        "disk_cache_entries": entries,
        "disk_cache_bytes": size,
        "ru_maxrss_kb_at_first_demos": rss_kb,
    }))
    return 0


def main(argv=None) -> int:
    args = parse_args(argv if argv is not None else sys.argv[1:])
    if args.questions_holdout is None:
        args.questions_holdout = args.holdout
    if args.parity:
        return parity(*args.parity)
    if args.make_dataset:
        count, out_path = args.make_dataset
        if not count.isdigit() or int(count) < 1:
            sys.exit("dspy_knn: --make-dataset needs a positive number of examples")
        return make_dataset(args, int(count), out_path)
    if args.fresh:
        if not args.cache_dir:
            sys.exit("dspy_knn: --fresh needs --cache-dir DIR (DSPy's disk cache for this run)")
        return fresh(args)

    import numpy as np

    t_import = time.perf_counter()
    import dspy
    import onnxruntime
    import tokenizers
    from dspy.teleprompt import KNNFewShot
    from dspy.utils.dummies import DummyLM

    import_s = time.perf_counter() - t_import
    # Memory cache only: nothing written under ~/.dspy_cache.
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=True)

    model_dir = Path(args.model_dir)
    if not (model_dir / "model.onnx").is_file():
        sys.exit(f"dspy_knn: no model at {model_dir}/model.onnx; run `bash scripts/setup-assets.sh --no-llm`")

    base, heldout, duplicates, n_conversations = load_examples(Path(args.data), args.window, args.holdout)
    if not base:
        sys.exit("dspy_knn: no examples")

    questions = pick_questions(args, heldout)
    if args.questions_out:
        with open(args.questions_out, "w", encoding="utf-8") as f:
            for q in questions:
                f.write(json.dumps(q, ensure_ascii=False) + "\n")

    n = max(args.scale, len(base)) if args.scale else len(base)
    synthetic = bool(args.scale) and n > len(base) and not args.scale_embed

    def history_of(i: int) -> str:
        text = base[i % len(base)][0]
        return text if i < len(base) else f"{text} #{i}"

    trainset = [
        dspy.Example(chat_history=history_of(i), output=base[i % len(base)][1]).with_inputs("chat_history")
        for i in range(n)
    ]
    # The exact strings KNN.__init__ builds (dspy/predict/knn.py).
    knn_texts = [
        " | ".join(f"{key}: {value}" for key, value in ex.items() if key in ex._input_keys) for ex in trainset
    ]
    assert knn_texts[0] == dspy_text(trainset[0].chat_history), "DSPy changed how KNN renders inputs"

    t = time.perf_counter()
    model = MiniLM(model_dir, args.threads, args.batch)
    model_load_s = time.perf_counter() - t
    model(["warm-up"])  # one tiny call so the first timed batch is not ONNX Runtime's first run

    # (a) raw vectorizer throughput on the texts KNN embeds (the base texts under --scale).
    raw_texts = knn_texts[: len(base)]
    tokens_before = model.tokens
    t = time.perf_counter()
    base_vectors = model(raw_texts)
    raw_s = time.perf_counter() - t
    raw_tokens = model.tokens - tokens_before
    raw_tps = len(raw_texts) / raw_s

    vectorizer = model
    if synthetic:
        vectorizer = ScaledVectorizer(model, dict(zip(raw_texts, base_vectors)), args.noise, args.seed)

    class TimedDummyLM(DummyLM):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.timed_calls = 0
            self.timed_seconds = 0.0

        def __call__(self, *a, **kw):
            t0 = time.perf_counter()
            try:
                return super().__call__(*a, **kw)
            finally:
                self.timed_seconds += time.perf_counter() - t0
                self.timed_calls += 1

    lm = TimedDummyLM({"": {"output": "mm stub reply from DummyLM"}})
    dspy.configure(lm=lm)

    student = reply_student(dspy)

    # DSPy is given a plain function, as with `dspy.Embedder(model.encode)`: with caching on,
    # DSPy deep-copies the callable on every cache miss (a function is copied by reference; an
    # object holding an ONNX session cannot be deep-copied at all).
    def embed(texts):
        return vectorizer(texts)

    # (b) compile: construction (embeds the trainset) + compile(); no embedding cache.
    t = time.perf_counter()
    knn_fs = KNNFewShot(args.k, trainset, vectorizer=dspy.Embedder(embed, caching=False))
    knn_init_s = time.perf_counter() - t
    t2 = time.perf_counter()
    program = knn_fs.compile(student)
    compile_call_s = time.perf_counter() - t2
    compile_s = time.perf_counter() - t
    if synthetic:
        vectorizer.synthetic = False
    assert knn_fs.KNN.trainset_vectors.shape == (n, 384)

    # (b') DSPy's default Embedder(caching=True): a first build fills the memory cache, a second reads it.
    cached = None
    if not args.no_cached and not args.scale_embed:
        if synthetic:
            vectorizer.synthetic = True
        emb = dspy.Embedder(embed)  # caching=True is the default
        t = time.perf_counter()
        KNNFewShot(args.k, trainset, vectorizer=emb).compile(student)
        fill_s = time.perf_counter() - t
        t = time.perf_counter()
        KNNFewShot(args.k, trainset, vectorizer=emb).compile(student)
        hit_s = time.perf_counter() - t
        if synthetic:
            vectorizer.synthetic = False
        cached = {"first_seconds": fill_s, "second_seconds": hit_s}

    # (c) per question: the KNN call KNNFewShot's forward makes (query embedding + exact search).
    knn = knn_fs.KNN
    embed_s, knn_s, rest_s, picks = [], [], [], []
    for q in questions:
        history = f"{FAN_TAG}: {q}"
        t = time.perf_counter()
        demos = knn(chat_history=history)
        dt = time.perf_counter() - t
        inner = vectorizer.last_seconds
        knn_s.append(dt)
        embed_s.append(inner)
        rest_s.append(dt - inner)
        picks.append(demos)
    # The search alone, re-timed outside DSPy on the same query vectors: numpy dot + full argsort.
    search_only = []
    query_vectors = model([dspy_text(f"{FAN_TAG}: {q}") for q in questions]) if questions else np.zeros((0, 384))
    for qv in query_vectors:
        t = time.perf_counter()
        scores = np.dot(knn.trainset_vectors, qv[None, :].T).squeeze()
        scores.argsort()[-args.k:][::-1]
        search_only.append(time.perf_counter() - t)

    # Forward with DummyLM: what a compiled KNNFewShot program does per question. With the
    # default BootstrapFewShot arguments the demos are the LM's own outputs for the neighbours'
    # inputs (one LM call per neighbour, then the answer); with max_bootstrapped_demos=0 they are
    # the neighbours' gold replies, as in persona. The second program shares the first one's KNN
    # (a shallow copy of the KNNFewShot, so nothing is embedded again).
    def time_forward(prog):
        fwd_s, lm_s, lm_calls = [], [], []
        for q in questions:
            c0, s0 = lm.timed_calls, lm.timed_seconds
            t = time.perf_counter()
            prog(chat_history=f"{FAN_TAG}: {q}")
            fwd_s.append(time.perf_counter() - t)
            lm_calls.append(lm.timed_calls - c0)
            lm_s.append(lm.timed_seconds - s0)
        stats = ms_stats(fwd_s)
        stats["lm_calls_per_question"] = statistics.fmean(lm_calls)
        stats["lm_median_ms"] = pct([s * 1000 for s in lm_s], 50)
        stats["without_lm_median_ms"] = pct([(a - b) * 1000 for a, b in zip(fwd_s, lm_s)], 50)
        return stats

    forward = forward_gold = None
    if not args.no_forward and questions:
        # BootstrapFewShot print()s a line per question; keep it out of the report.
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            forward = time_forward(program)
            gold_fs = copy.copy(knn_fs)
            gold_fs.few_shot_bootstrap_args = {"max_bootstrapped_demos": 0}
            forward_gold = time_forward(gold_fs.compile(student))

    if args.vectors_out:
        # Persona embeds the history text without DSPy's `chat_history: ` prefix; embed exactly
        # persona's texts (untimed) so --parity compares like with like.
        np.savez(args.vectors_out, train=model([b[0] for b in base]),
                 queries=model([f"{FAN_TAG}: {q}" for q in questions]))

    knn_stats = ms_stats(knn_s)
    embed_stats = ms_stats(embed_s)
    rest_stats = ms_stats(rest_s)
    search_stats = ms_stats(search_only)
    est_embed_n_s = n / raw_tps
    result = {
        "tool": "dspy",
        "versions": {
            "dspy": dspy.__version__,
            "onnxruntime": onnxruntime.__version__,
            "tokenizers": tokenizers.__version__,
            "numpy": np.__version__,
            "python": sys.version.split()[0],
        },
        "threads": args.threads,
        "batch": args.batch,
        "k": args.k,
        "window": args.window,
        "conversations": n_conversations,
        "base_examples": len(base),
        "heldout_examples": len(heldout),
        "duplicates_dropped": duplicates,
        "examples": n,
        "scale": args.scale or None,
        "synthetic_vectors": synthetic,
        "dspy_import_seconds": r(import_s),
        "model_load_seconds": r(model_load_s),
        "raw": {"texts": len(raw_texts), "seconds": r(raw_s), "turns_per_s": r(raw_tps, 1),
                "mean_tokens": r(raw_tokens / len(raw_texts), 1)},
        "compile": {"seconds": r(compile_s), "turns_per_s": r(n / compile_s, 1),
                    "knn_init_seconds": r(knn_init_s), "compile_call_seconds": r(compile_call_s, 6),
                    "embedding_included": not synthetic,
                    "estimated_embedding_seconds_for_n": r(est_embed_n_s) if synthetic else None,
                    "estimated_turns_per_s_with_real_embedding":
                        r(n / (compile_s + est_embed_n_s), 1) if synthetic else None},
        "compile_cached": None if cached is None else {k2: r(v) for k2, v in cached.items()},
        "knn": {**{k2: r(v) for k2, v in knn_stats.items()},
                "embed_median_ms": r(embed_stats["median_ms"]), "embed_p90_ms": r(embed_stats["p90_ms"]),
                "rest_median_ms": r(rest_stats["median_ms"]), "rest_p90_ms": r(rest_stats["p90_ms"]),
                "numpy_search_median_ms": r(search_stats["median_ms"]),
                "numpy_search_p90_ms": r(search_stats["p90_ms"]),
                "per_question_ms": [r(x * 1000.0) for x in knn_s],
                "embed_per_question_ms": [r(x * 1000.0) for x in embed_s]},
        "forward_dummy_lm": None if forward is None else {k2: r(v) for k2, v in forward.items()},
        "forward_dummy_lm_gold_demos": None if forward_gold is None else {k2: r(v) for k2, v in forward_gold.items()},
        "questions": len(questions),
        # A fresh DSPy process must rebuild the KNN (embed the whole trainset) before its first
        # answer: import + model load + KNNFewShot construction and compile() + the first KNN
        # call, as measured above (interpreter start and the tiny warm-up call not included).
        # Not given with synthetic vectors, whose compile skips the embedding.
        "fresh_process_to_first_demos_seconds":
            None if synthetic else r(import_s + model_load_s + compile_s + knn_stats["first_ms"] / 1000.0),
    }

    # ---- report
    kf = result["knn"]
    rows = [
        ("threads (ONNX Runtime intra-op)", f"{args.threads}"),
        ("examples in the trainset", f"{n}" + (" (synthetic vectors beyond the first %d)" % len(base) if synthetic else "")),
        ("raw vectorizer throughput", f"{raw_tps:.1f} turns/s ({len(raw_texts)} texts, {raw_s:.2f} s, "
                                      f"{raw_tokens / len(raw_texts):.1f} tokens/text)"),
        ("KNNFewShot construction + compile()", f"{n / compile_s:.1f} turns/s ({compile_s:.2f} s; "
                                                 f"compile() alone {compile_call_s * 1000:.3f} ms)"
                                                 + (" [embedding NOT included: synthetic vectors]" if synthetic else "")),
    ]
    if synthetic:
        rows.append(("  estimated with real embedding", f"{n / (compile_s + est_embed_n_s):.1f} turns/s "
                     f"(+{est_embed_n_s:.1f} s to embed {n} texts at the raw rate; estimate, not measured)"))
    if cached:
        rows.append(("same, Embedder(caching=True)", f"first {cached['first_seconds']:.2f} s, "
                     f"second (cache hits) {cached['second_seconds']:.2f} s"))
    rows += [
        (f"KNN call per question ({len(questions)} q)", f"median {kf['median_ms']:.2f} ms, p90 {kf['p90_ms']:.2f} ms "
                                                          f"(first {kf['first_ms']:.2f} ms)"),
        ("  of which query embedding", f"median {kf['embed_median_ms']:.2f} ms, p90 {kf['embed_p90_ms']:.2f} ms"),
        ("  of which search + DSPy", f"median {kf['rest_median_ms']:.3f} ms, p90 {kf['rest_p90_ms']:.3f} ms "
                                     f"(numpy dot + argsort alone: median {kf['numpy_search_median_ms']:.3f} ms)"),
    ]
    if not synthetic:
        rows.append(("fresh process to first demos", f"{result['fresh_process_to_first_demos_seconds']:.2f} s "
                     f"(import {import_s:.2f} + model load {model_load_s:.2f} + compile {compile_s:.2f} + first KNN "
                     f"call; sum of the in-process timings)"))
    if forward:
        rows.append(("full forward with DummyLM", f"median {forward['median_ms']:.2f} ms, p90 {forward['p90_ms']:.2f} ms; "
                     f"{forward['lm_calls_per_question']:.1f} LM calls/question (BootstrapFewShot over the "
                     f"{args.k} neighbours + the answer), {forward['lm_median_ms']:.2f} ms in DummyLM, "
                     f"{forward['without_lm_median_ms']:.2f} ms outside it; the demos are the LM's outputs"))
    if forward_gold:
        rows.append(("  same, max_bootstrapped_demos=0", f"median {forward_gold['median_ms']:.2f} ms, p90 "
                     f"{forward_gold['p90_ms']:.2f} ms; {forward_gold['lm_calls_per_question']:.1f} LM calls/question, "
                     f"{forward_gold['without_lm_median_ms']:.2f} ms outside DummyLM; the demos are the gold replies"))
    print(f"## DSPy {dspy.__version__} KNNFewShot, MiniLM int8 via onnxruntime {onnxruntime.__version__}\n")
    print("| figure | value |\n|---|---|")
    for a, b in rows:
        print(f"| {a} | {b} |")
    print()
    print(json.dumps(result, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
