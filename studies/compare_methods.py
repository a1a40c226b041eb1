"""labelclean vs cleanlab, the small-loss rule and AUM on the same noisy data.

One MNIST subset, one noise draw, one model family and one epoch budget for
every method, in one process (so timings share the same machine state):

* ``labelclean/loss``: ``Cleaner(...).fit`` with the library defaults (window-3
  mean loss, online peak of Ashman's D; stops after the phase-II peak);
* ``labelclean/aum``: the same with ``suspicion="aum"`` (docs/phases.md,
  "Choosing t_c");
* ``cleanlab/prune_by_noise_rate`` and ``cleanlab/predicted_neq_given``:
  ``cleanlab.filter.find_label_issues`` on out-of-sample ``pred_probs`` from
  5-fold cross-validation, each fold trained for ``--epochs`` epochs;
* ``small_loss@<e>``: the ``rate * N`` largest losses at a fixed epoch ``e``
  of the labelclean run (Co-teaching's rule; it is *given the true noise
  rate*, which no other method is);
* ``aum``: AUM (Pleiss et al. 2020) from the same labelclean run, the
  given-label margin averaged over epochs ``1..t_c``; flags AUM < 0 (the
  threshold-sample variant, which needs an extra run with a fake class, is not
  implemented).

Cost is wall and CPU seconds (``time.process_time``, all threads) per method;
the derived rules (small-loss, AUM) cost nothing beyond the labelclean run.

    python studies/compare_methods.py --noise symmetric --rate 0.5 --model mlp:30,30
    python studies/compare_methods.py --noise pairflip --rate 0.4 --model mlp:30,30 --csv out.csv

cleanlab is an optional extra: ``pip install 'labelclean[bench]'``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from labelclean import Cleaner, Dataset
from labelclean.bench import aligned, auroc, prf
from labelclean.models import create_model, input_statistics
from labelclean.noise import inject_noise
from labelclean.training import TrainConfig, Trainer

MNIST = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "mnist.npz"


def mnist_subset(n: int, path: Path = MNIST, seed: int = 0):
    d = np.load(path)
    idx = np.sort(np.random.default_rng(seed).choice(len(d["y_train"]), n, replace=False))
    return d["x_train"][idx], d["y_train"][idx].astype(np.int64)


def cv_pred_probs(x: torch.Tensor, y: np.ndarray, model: str, config: TrainConfig,
                  folds: int = 5, seed: int = 0) -> np.ndarray:
    """Out-of-sample predicted probabilities from ``folds``-fold cross-validation."""
    from sklearn.model_selection import StratifiedKFold

    probs = np.zeros((len(y), int(y.max()) + 1), dtype=np.float64)
    skf = StratifiedKFold(folds, shuffle=True, random_state=seed)
    for k, (tr, te) in enumerate(skf.split(np.zeros(len(y)), y)):
        torch.manual_seed(seed * 100 + k)
        xt = x[torch.as_tensor(tr)]
        mean, std = input_statistics(xt)
        net = create_model(model, tuple(x.shape[1:]), probs.shape[1], mean, std)
        trainer = Trainer(net, xt, y[tr], config)
        for _ in range(config.max_epochs):
            trainer.train_epoch()
        probs[te] = trainer.predict_proba(x[torch.as_tensor(te)])
    return probs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--noise", default="symmetric")
    ap.add_argument("--rate", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default="mlp:30,30")
    ap.add_argument("--epochs", type=int, default=20, help="epoch budget of every training")
    ap.add_argument("--small-loss-epoch", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-cleanlab", action="store_true")
    ap.add_argument("--csv", type=Path, default=None)
    ap.add_argument("--mnist", type=Path, default=MNIST)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    x, y = mnist_subset(args.n, args.mnist)
    noisy, mask = inject_noise(y, 10, args.rate, args.noise, seed=args.seed)
    ds = Dataset.from_arrays(x, noisy, noise_mask=mask)
    rows = []

    def add(method, flags, score=None, wall=0.0, cpu=0.0, note=""):
        p, r, f = prf(flags, mask)
        rows.append({"method": method, "precision": p, "recall": r, "f1": f,
                     "auroc": np.nan if score is None else auroc(mask, score),
                     "flagged": int(flags.sum()), "wall_s": wall, "cpu_s": cpu, "note": note})

    for suspicion in ("loss", "aum"):
        w0, c0 = time.perf_counter(), time.process_time()
        res = Cleaner(args.model, max_epochs=args.epochs, seed=args.seed, probe_every=0,
                      device="cpu", suspicion=suspicion).fit(ds, noise_mask=mask)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        add(f"labelclean/{suspicion}", aligned(res, "flagged").astype(bool),
            aligned(res, "score"), wall, cpu,
            f"t_c={res.t_c}, {res.timing['epochs_trained']} epochs; oracle F1 "
            f"{res.history.true_f1.max():.3f}")
    # The derived rules below read the AUM run (the longer of the two).

    e = min(args.small_loss_epoch, len(res.losses))
    loss_e = res.losses[e - 1]
    k = int(round(args.rate * len(loss_e)))
    flags = np.zeros(len(loss_e), bool)
    flags[np.argsort(-loss_e)[:k]] = True
    add(f"small_loss@{e}", flags, loss_e, note="given the TRUE noise rate; from labelclean run")

    aum = res.margins[: res.t_c].mean(0)
    add("aum", aum < 0, -aum, note=f"margins of epochs 1..t_c={res.t_c}; from labelclean run")
    neq = res.margins[res.t_c - 1] < 0
    add("pred_neq_given@t_c", neq, -res.margins[res.t_c - 1], note="from labelclean run")

    if not args.skip_cleanlab:
        from cleanlab.filter import find_label_issues

        config = TrainConfig(max_epochs=args.epochs, seed=args.seed, device="cpu")
        w0, c0 = time.perf_counter(), time.process_time()
        probs = cv_pred_probs(ds.x, noisy, args.model, config, seed=args.seed)
        cv_wall, cv_cpu = time.perf_counter() - w0, time.process_time() - c0
        for filt in ("prune_by_noise_rate", "predicted_neq_given"):
            w0, c0 = time.perf_counter(), time.process_time()
            issues = find_label_issues(noisy, probs, filter_by=filt)
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            add(f"cleanlab/{filt}", np.asarray(issues, bool), -probs[np.arange(len(y)), noisy],
                cv_wall + wall, cv_cpu + cpu, f"5-fold CV x {args.epochs} epochs")

    df = pd.DataFrame(rows)
    df.insert(0, "setting", f"{args.model} {args.noise} {args.rate} n={args.n} s{args.seed}")
    with pd.option_context("display.width", 200, "display.max_colwidth", 60):
        print(df.drop(columns="setting").to_string(index=False, float_format="{:.3f}".format))
    if args.csv:
        header = not args.csv.exists()
        df.to_csv(args.csv, mode="a", header=header, index=False)


if __name__ == "__main__":
    main()
