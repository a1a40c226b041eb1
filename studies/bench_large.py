"""The memory-mapped path for large inputs against the in-memory one, on the same images.

Writes ``--n`` random RGB JPEGs of ``--side`` pixels as a class folder (once),
then measures, in one process:

* decoding: in memory; into a memory-mapped cache (first run); reloading that
  cache (second run);
* training epochs of the default model (``Trainer.train_epoch``) on the
  in-memory tensor and on the memory-mapped one with 0 and ``--workers``
  DataLoader workers, interleaved, the fastest of ``--epochs`` each;
* the eval-mode per-sample pass on each.

    python studies/bench_large.py --n 4000 --side 64 --epochs 2 --threads 2 \\
        --out bench_out/large --json bench_out/large.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from labelclean import load_dataset
from labelclean.models import DEFAULT_IMAGE_MODEL, create_model, input_statistics
from labelclean.training import TrainConfig, Trainer


def write_jpegs(root: Path, n: int, side: int, classes: int = 10, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for i in range(n):
        p = root / f"c{i % classes}" / f"{i:06d}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(p, quality=90)


def timed(f):
    start = time.perf_counter()
    out = f()
    return out, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--side", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default=DEFAULT_IMAGE_MODEL)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data, cache = args.out / "data", args.out / "cache"
    if not data.exists():
        write_jpegs(data, args.n, args.side)
    shutil.rmtree(cache, ignore_errors=True)
    size = args.side

    mem, t_mem = timed(lambda: load_dataset(data, image_size=size))
    mapped, t_map = timed(lambda: load_dataset(data, image_size=size, cache=cache, max_memory=1))
    again, t_again = timed(lambda: load_dataset(data, image_size=size, cache=cache, max_memory=1))
    assert mapped.mapped and again.mapped and torch.equal(mem.x, mapped.x)

    mean, std = input_statistics(mem.x)
    trainers = {}
    for name, ds, workers in (("in_memory", mem, 0), ("mapped", again, 0),
                              (f"mapped_{args.workers}_workers", again, args.workers)):
        torch.manual_seed(0)
        model = create_model(args.model, ds.input_shape, ds.num_classes, mean, std)
        trainers[name] = Trainer(model, ds.x, ds.y, TrainConfig(workers=workers))
    train: dict[str, list[float]] = {k: [] for k in trainers}
    evals: dict[str, list[float]] = {k: [] for k in trainers}
    for _ in range(args.epochs):
        for k, t in trainers.items():
            train[k].append(t.train_epoch().seconds)
            evals[k].append(timed(t.evaluate)[1])
    out = {
        "n": args.n, "side": size, "model": args.model, "threads": args.threads,
        "decoded_mib": mem.x.numel() / 2**20,
        "decode_seconds": {"in_memory": t_mem, "mapped_first": t_map, "mapped_reload": t_again},
        "train_seconds_per_epoch": {k: min(v) for k, v in train.items()},
        "eval_seconds": {k: min(v) for k, v in evals.items()},
    }
    base = out["train_seconds_per_epoch"]["in_memory"]
    out["train_speed_vs_in_memory"] = {
        k: base / v for k, v in out["train_seconds_per_epoch"].items()
    }
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
