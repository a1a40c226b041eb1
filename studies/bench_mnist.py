"""``labelclean bench`` on an MNIST subset held in memory (no image files written).

The same as ``labelclean bench DATA --test TEST ...`` with DATA = ``--n``
training images of ../shared/datasets/mnist.npz and TEST = its 10,000 test
images; any further ``--key value`` pairs go to the Cleaner.

    python studies/bench_mnist.py --noise symmetric --rate 0.5 --seeds 0 1 2 \\
        --model mlp:30,30 --max_epochs 20 --retrain --out bench_out/q_sym0.5
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from labelclean import Dataset
from labelclean.bench import format_table, run_bench

MNIST = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "mnist.npz"


def _value(v: str):
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--noise", default="symmetric")
    ap.add_argument("--rate", type=float, default=0.2)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--retrain", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--mnist", type=Path, default=MNIST)
    args, extra = ap.parse_known_args()
    torch.set_num_threads(args.threads)
    kw = {k.lstrip("-").replace("-", "_"): _value(v) for k, v in zip(extra[::2], extra[1::2],
                                                                      strict=True)}
    kw.setdefault("probe_every", 0)
    kw.setdefault("device", "cpu")
    d = np.load(args.mnist)
    idx = np.sort(np.random.default_rng(0).choice(len(d["y_train"]), args.n, replace=False))
    train = Dataset.from_arrays(d["x_train"][idx], d["y_train"][idx])
    test = Dataset.from_arrays(d["x_test"], d["y_test"])
    df = run_bench(train, noise=args.noise, rate=args.rate, seeds=args.seeds,
                   retrain=args.retrain, test=test if args.retrain else None, out=args.out,
                   echo=print, **kw)
    print(format_table(df))


if __name__ == "__main__":
    main()
