"""Out-of-sample ``pred_probs`` by K-fold cross-validation, saved for cleanlab.

The expensive half of cleanlab's confident learning (K trainings) is run here,
on any device, and saved to ``<out>/cv_<model>_<kind><rate>_s<seed>.npz`` with
its wall and CPU seconds; ``studies/cleanlab_eval.py`` then runs
``cleanlab.filter.find_label_issues`` on the saved probabilities (cheap, CPU)
and scores it against the injected mask. Same data, noise draw (``inject_noise``
with the same seed) and SGD settings as ``tc_sweep.py``.

    python studies/cv_probs.py --model regnetx_002 --noise symmetric --rate 0.5 --seed 0 \\
        --epochs 10 --device cuda --out bench_out/cv
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from compare_methods import cv_pred_probs
from tc_sweep import MNIST, mnist_subset, tag

from labelclean.noise import inject_noise
from labelclean.training import TrainConfig, resolve_device


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="regnetx_002")
    ap.add_argument("--noise", default="symmetric")
    ap.add_argument("--rate", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--epochs", type=int, default=10, help="epochs of each fold's training")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mnist", type=Path, default=MNIST)
    ap.add_argument("--out", type=Path, default=Path("bench_out/cv"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    x, y = mnist_subset(args.n, path=args.mnist)
    noisy, mask = inject_noise(y, 10, args.rate, args.noise, seed=args.seed)
    config = TrainConfig(max_epochs=args.epochs, seed=args.seed,
                         device=str(resolve_device(args.device)))
    w0, c0 = time.perf_counter(), time.process_time()
    probs = cv_pred_probs(torch.as_tensor(x)[:, None], noisy, args.model, config,
                          folds=args.folds, seed=args.seed)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    path = args.out / f"cv_{tag(args.model, args.noise, args.rate, args.seed, 0.1)}.npz"
    np.savez_compressed(path, probs=probs.astype(np.float32), given=noisy, mask=mask, true=y,
                        wall=wall, cpu=cpu, epochs=args.epochs, folds=args.folds,
                        device=config.device)
    print(f"{path.name}: {wall:.0f}s wall, {cpu:.0f}s cpu", flush=True)


if __name__ == "__main__":
    main()
