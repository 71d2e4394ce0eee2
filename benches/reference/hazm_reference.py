#!/usr/bin/env python3
"""hazm baseline for lexmesh's text-preprocessing throughput.

Reads a JSONL file (default ../shared/data/iran-court-rulings/train.jsonl beside the
repository: the development data),
takes the "text" field of every line, and times, in one process on one core
(no multiprocessing; BLAS/OpenMP thread pools limited to 1):

    word_tokenize(Normalizer().normalize(text))     for every text

The Normalizer is built once, with hazm's default options, and word_tokenize's
lazily built WordTokenizer is warmed up on a short string, both outside the
timing.
The whole pass is repeated --repeats times (default 3) and the median is kept.
Prints ONE JSON line:

    {"tool":"hazm","mb":...,"seconds_median":...,"mb_per_sec":...}

mb = UTF-8 bytes of all input texts / 1e6; mb_per_sec = mb / seconds_median.

Run with the venv made by benches/setup-pytorch:

    .tools/bench-venv/bin/python benches/reference/hazm_reference.py
"""

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

DEFAULT_DATA = os.path.join(
    os.path.dirname(os.path.abspath(__file__)),
    "..", "..", "..", "shared", "data", "iran-court-rulings", "train.jsonl",
)


def load_texts(path: str) -> list:
    texts = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                texts.append(json.loads(line)["text"])
    return texts


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="hazm normalize + word_tokenize throughput")
    p.add_argument("--data", default=DEFAULT_DATA, help="JSONL file with a \"text\" field")
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args(argv)
    if a.repeats < 1:
        p.error("--repeats must be >= 1")

    from hazm import Normalizer, word_tokenize

    texts = load_texts(a.data)
    if not texts:
        print(f"no texts in {a.data}", file=sys.stderr)
        return 1
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    normalizer = Normalizer()
    # word_tokenize builds its WordTokenizer (loads word lists) on first use:
    # do that outside the timed passes.
    word_tokenize(normalizer.normalize(texts[0][:200]))

    times = []
    n_tokens = 0
    for _ in range(a.repeats):
        n_tokens = 0
        t0 = time.perf_counter()
        for t in texts:
            n_tokens += len(word_tokenize(normalizer.normalize(t)))
        times.append(time.perf_counter() - t0)
    if n_tokens == 0:
        print("hazm produced no tokens", file=sys.stderr)
        return 1

    med = statistics.median(times)
    print(json.dumps({"tool": "hazm", "mb": mb, "seconds_median": med, "mb_per_sec": mb / med},
                     separators=(",", ":")), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
