"""Which network learns CIFAR-10N's human-noisy labels fastest per wall second on a CPU?

Trains one candidate on the CIFAR-10N development set (``../shared/datasets/
cifar10n_dev``, 10,000 images, a human label set) with labelclean's own
:class:`~labelclean.training.Trainer` and, after every epoch, prints one JSON line:
training accuracy on the given labels, accuracy of the eval pass against the
true labels, clean test accuracy (2,000 test images), and how well the AUM
(mean margin so far) ranks the wrong labels: its AUROC, the best F1 any
threshold reaches (an oracle), and the F1 and flagged share of "AUM < 0".
This chose :data:`labelclean.models.DEFAULT_RGB_MODEL` (docs/benchmarks.md).

    python studies/learner_study.py cnn:32,64,128 --lr 0.05 --augment shift-flip --epochs 12
    python studies/learner_study.py regnetx_002 --lr 0.1 --augment shift-flip --epochs 12
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from labelclean.models import create_model
from labelclean.training import TrainConfig, Trainer

BASE = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "cifar10n_dev"


def load(label_set: str) -> tuple[torch.Tensor, np.ndarray, np.ndarray, torch.Tensor, np.ndarray]:
    """``(train images, given labels, true labels, test images, test labels)``."""
    table = pd.read_csv(BASE / "labels.csv")
    names = sorted(table["clean"].unique())
    code = {c: i for i, c in enumerate(names)}

    def images(paths: list[Path]) -> torch.Tensor:
        arr = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
        return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()

    test = [(p, code[c]) for c in names for p in sorted((BASE / "test" / c).glob("*.jpg"))]
    return (images([BASE / p for p in table["path"]]), table[label_set].map(code).to_numpy(),
            table["clean"].map(code).to_numpy(), images([p for p, _ in test]),
            np.array([c for _, c in test]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--labels", default="worse", help="CIFAR-10N label set")
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--augment", default="shift-flip")
    ap.add_argument("--shift-pixels", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--weight-decay", type=float, default=5e-4)
    ap.add_argument("--nesterov", action="store_true")
    ap.add_argument("--label-smoothing", type=float, default=0.0)
    ap.add_argument("--eval-flip", action="store_true")
    ap.add_argument("--whiten", action="store_true")
    ap.add_argument("--ema", type=float, default=0.0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x, y, truth, x_test, y_test = load(args.labels)
    wrong = y != truth
    mean = x.float().mean((0, 2, 3)).view(3, 1, 1)
    std = x.float().std((0, 2, 3)).view(3, 1, 1)
    torch.manual_seed(0)
    model = create_model(args.model, (3, 32, 32), 10, mean, std)
    if args.whiten:
        model.init_whitening(x)
    trainer = Trainer(model, x, y, TrainConfig(
        lr=args.lr, batch_size=args.batch_size, momentum=args.momentum,
        weight_decay=args.weight_decay, nesterov=args.nesterov,
        label_smoothing=args.label_smoothing, eval_flip=args.eval_flip, ema=args.ema,
        max_epochs=args.epochs, augment=args.augment, shift_pixels=args.shift_pixels))
    aum = np.zeros(len(y))
    seconds = 0.0
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        stats = trainer.train_epoch()
        s = trainer.evaluate()
        seconds += time.perf_counter() - t0  # training and the eval pass, not the test
        aum += s.margin
        test_acc = float((trainer.predict_proba(x_test[:2000]).argmax(1) == y_test[:2000]).mean())
        order = np.argsort(aum / epoch)
        hits = np.cumsum(wrong[order])
        oracle = float((2 * hits / (np.arange(1, len(y) + 1) + wrong.sum())).max())
        flags = aum < 0
        tp = float((flags & wrong).sum())
        f1 = 2 * tp / (flags.sum() + wrong.sum()) if flags.any() else 0.0
        print(json.dumps({
            "model": args.model, "labels": args.labels, "lr": args.lr, "augment": args.augment,
            "batch_size": args.batch_size, "label_smoothing": args.label_smoothing,
            "eval_flip": args.eval_flip, "nesterov": args.nesterov, "whiten": args.whiten,
            "ema": args.ema,
            "epoch": epoch, "seconds": round(seconds, 1),
            "train_accuracy": round(stats.train_accuracy, 3),
            "eval_accuracy_true": round(float((s.pred == truth).mean()), 3),
            "test_accuracy": round(test_acc, 3),
            "auroc_aum": round(float(roc_auc_score(wrong, -aum)), 3),
            "f1_oracle_aum": round(oracle, 3), "f1_aum_below_0": round(f1, 3),
            "flagged_share": round(float(flags.mean()), 3)}), flush=True)


if __name__ == "__main__":
    main()
