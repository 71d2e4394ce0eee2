#!/usr/bin/env python3
"""PyTorch reference for the lexmesh training-throughput benchmark.

Trains one text classifier on CPU with synthetic data and prints ONE JSON line:

  {"framework":"pytorch","model":"bow","batch":64,"length":128,"vocab":20000,
   "dim":128,"hidden":256,"classes":10,"threads":2,"steps":50,"warmup":5,
   "examples_per_sec":...,"seconds":...}

Run with the venv made by benches/setup-pytorch:

  .tools/bench-venv/bin/python benches/reference/pytorch_reference.py --model bow --threads 2

The Rust (burn + libtorch) side mirrors everything below exactly.

Threads
-------
torch.set_num_threads(T) (intra-op) and torch.set_num_interop_threads(1),
both set before any tensor work. Device: CPU, dtype float32.

Data (not timed)
----------------
torch.manual_seed(seed). NB = min(16, warmup + steps) distinct batches are
generated up front and cycled through (step i uses batch i % NB):
  ids:    LongTensor [batch, length], uniform in [1, vocab)   (0 = padding, never drawn)
  labels: LongTensor [batch],         uniform in [0, classes)

Models (PyTorch default initialisation; model.train(), so dropout is active)
---------------------------------------------------------------------------
bow (bag of words, mean of embeddings + MLP):
  x: [B, L] int64
  EmbeddingBag(vocab, dim, mode="mean", padding_idx=0, sparse=False)  -> [B, dim]
      (ids == padding_idx are left out of the mean; none occur here)
  Linear(dim, hidden)                                                 -> [B, hidden]
  ReLU
  Linear(hidden, classes)                                             -> [B, classes] logits

cnn (Kim 2014, CNN for sentence classification, "CNN-rand"):
  x: [B, L] int64
  Embedding(vocab, dim, padding_idx=0, sparse=False)                  -> [B, L, dim]
  transpose(1, 2)                                                     -> [B, dim, L]
  for k in (3, 4, 5):
      Conv1d(dim, 100, kernel_size=k)   (stride 1, no padding, bias)  -> [B, 100, L-k+1]
      ReLU
      max over time (dim 2)                                           -> [B, 100]
  concat the three in order k=3,4,5                                   -> [B, 300]
  Dropout(p=0.5)
  Linear(300, classes)                                                -> [B, classes] logits

Training step (after `warmup` untimed ones, `windows` timed windows of `steps` steps each)
---------------------------------------------------------------------------
  optimizer.zero_grad()                      (set_to_none=True, torch default)
  logits = model(ids)
  loss = F.cross_entropy(logits, labels)     (mean reduction)
  loss.backward()
  optimizer.step()
Optimizer: torch.optim.Adam(model.parameters(), lr=1e-3), defaults otherwise
(betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False). Gradients are
dense (the whole vocab x dim embedding is updated by Adam every step). On CPU the
default step is the single-tensor loop of in-place operations; `--fused` asks
for libtorch's fused kernel (fused=True), the step lexmesh's trainer takes.

Output
------
window_examples_per_sec = batch * steps / wall-clock (time.perf_counter) of each window
examples_per_sec        = their median (lexmesh's side: the median of its epochs after the
                          first, an epoch being the same 16 batches: the same aggregation)
seconds                 = wall-clock of all timed windows
"""

import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class BowClassifier(nn.Module):
    def __init__(self, vocab: int, dim: int, hidden: int, classes: int):
        super().__init__()
        self.embed = nn.EmbeddingBag(vocab, dim, mode="mean", padding_idx=0, sparse=False)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # ids: [B, L]
        x = self.embed(ids)  # [B, dim]
        x = F.relu(self.fc1(x))  # [B, hidden]
        return self.fc2(x)  # [B, classes]


class KimCnnClassifier(nn.Module):
    KERNELS = (3, 4, 5)
    FILTERS = 100

    def __init__(self, vocab: int, dim: int, classes: int, dropout: float = 0.5):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim, padding_idx=0, sparse=False)
        self.convs = nn.ModuleList(nn.Conv1d(dim, self.FILTERS, k) for k in self.KERNELS)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.FILTERS * len(self.KERNELS), classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # ids: [B, L]
        x = self.embed(ids).transpose(1, 2)  # [B, dim, L]
        pooled = [F.relu(conv(x)).amax(dim=2) for conv in self.convs]  # 3 x [B, 100]
        x = torch.cat(pooled, dim=1)  # [B, 300]
        return self.fc(self.dropout(x))  # [B, classes]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=("bow", "cnn"), required=True)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--vocab", type=int, default=20000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--hidden", type=int, default=256, help="bow only (recorded for cnn too)")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=16, help="untimed steps (one lexmesh epoch)")
    p.add_argument("--steps", type=int, default=16, help="steps per timed window")
    p.add_argument("--windows", type=int, default=4, help="timed windows (median reported)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--fused",
        action="store_true",
        help="Adam's fused step (fused=True: one kernel per parameter, as lexmesh's step)",
    )
    a = p.parse_args(argv)
    if a.vocab < 2:
        p.error("--vocab must be >= 2 (id 0 is padding)")
    if a.model == "cnn" and a.length < max(KimCnnClassifier.KERNELS):
        p.error("--length must be >= 5 for cnn")
    for name in ("batch", "length", "dim", "hidden", "classes", "threads", "steps", "windows"):
        if getattr(a, name) < 1:
            p.error(f"--{name} must be >= 1")
    if a.warmup < 0:
        p.error("--warmup must be >= 0")
    return a


def main(argv=None) -> int:
    a = parse_args(argv)

    # Must come before any parallel work.
    torch.set_num_interop_threads(1)
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)

    if a.model == "bow":
        model = BowClassifier(a.vocab, a.dim, a.hidden, a.classes)
    else:
        model = KimCnnClassifier(a.vocab, a.dim, a.classes)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=a.fused or None)

    n_batches = min(16, a.warmup + a.steps)
    batches = [
        (
            torch.randint(1, a.vocab, (a.batch, a.length), dtype=torch.long),
            torch.randint(0, a.classes, (a.batch,), dtype=torch.long),
        )
        for _ in range(n_batches)
    ]

    def step(i: int) -> torch.Tensor:
        ids, labels = batches[i % n_batches]
        opt.zero_grad()
        loss = F.cross_entropy(model(ids), labels)
        loss.backward()
        opt.step()
        return loss

    for i in range(a.warmup):
        step(i)

    # CPU ops are synchronous: perf_counter around each window is the real time.
    window_rates = []
    i = a.warmup
    total = 0.0
    for _ in range(a.windows):
        t0 = time.perf_counter()
        for _ in range(a.steps):
            loss = step(i)
            i += 1
        elapsed = time.perf_counter() - t0
        total += elapsed
        window_rates.append(a.batch * a.steps / elapsed)
    seconds = total

    if not torch.isfinite(loss.detach()):
        print(f"non-finite loss {loss.item()}", file=sys.stderr)
        return 1

    out = {
        "framework": "pytorch",
        "model": a.model,
        "batch": a.batch,
        "length": a.length,
        "vocab": a.vocab,
        "dim": a.dim,
        "hidden": a.hidden,
        "classes": a.classes,
        "threads": a.threads,
        "steps": a.steps,
        "windows": a.windows,
        "warmup": a.warmup,
        "fused": a.fused,
        "window_examples_per_sec": window_rates,
        "examples_per_sec": statistics.median(window_rates),
        "seconds": seconds,
    }
    print(json.dumps(out, separators=(",", ":")), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
