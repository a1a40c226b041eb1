"""Record full training runs for the offline study of how to choose ``t_c``.

Each setting (model, noise kind, rate, seed) is trained ONCE for ``--epochs``
epochs with patience larger than that (nothing stops early) and every epoch's
per-sample losses and margins are saved, with the history, the given labels and
the true noise mask, to ``<out>/<model>_<kind><rate>_s<seed>.npz``. Decision
rules are then compared offline on these matrices (``studies/tc_rules.py``).

    python studies/tc_sweep.py --model mlp:30,30 --epochs 20 --seeds 0 1 2 --threads 1
    python studies/tc_sweep.py --model mlp:256,256 --epochs 20 --seeds 0 1 2 --threads 1
    python studies/tc_sweep.py --model regnetx_002 --epochs 10 --seeds 0 --n 10000 \
        --settings symmetric:0.8 pairflip:0.4 --threads 1
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from labelclean.models import create_model, input_statistics
from labelclean.noise import inject_noise
from labelclean.training import TrainConfig, Trainer, resolve_device

MNIST = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "mnist.npz"
SETTINGS = [("symmetric", 0.0), ("symmetric", 0.2), ("symmetric", 0.5),
            ("symmetric", 0.8), ("pairflip", 0.4)]


def mnist_subset(n: int, seed: int = 0, path: Path = MNIST):
    d = np.load(path)
    idx = np.sort(np.random.default_rng(seed).choice(len(d["y_train"]), n, replace=False))
    return d["x_train"][idx], d["y_train"][idx].astype(np.int64)


def tag(model: str, kind: str, rate: float, seed: int, lr: float) -> str:
    m = model.replace(":", "").replace(",", "-")
    extra = "" if lr == 0.1 else f"_lr{lr:g}"
    return f"{m}_{kind}{rate:g}_s{seed}{extra}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="mlp:30,30")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--settings", nargs="*", default=None,
                    help="kind:rate pairs [default: symmetric 0/.2/.5/.8, pairflip .4]")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--mnist", type=Path, default=MNIST)
    ap.add_argument("--record-train", action="store_true",
                    help="also save the losses/margins of the training pass itself")
    ap.add_argument("--no-test", action="store_true",
                    help="skip the per-epoch test accuracy (saves a forward pass per epoch)")
    ap.add_argument("--half", action="store_true",
                    help="store losses and margins as float16 (half the size)")
    ap.add_argument("--out", type=Path, default=Path("bench_out/tc"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    settings = SETTINGS if not args.settings else [
        (s.split(":")[0], float(s.split(":")[1])) for s in args.settings
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    x, y = mnist_subset(args.n, path=args.mnist)
    d = np.load(args.mnist)
    x_test, y_test = torch.as_tensor(d["x_test"])[:, None], d["y_test"].astype(np.int64)
    for seed in args.seeds:
        for kind, rate in settings:
            path = args.out / (tag(args.model, kind, rate, seed, args.lr) + ".npz")
            if path.exists():
                continue
            noisy, mask = inject_noise(y, 10, rate, kind, seed=seed)
            # The same model, data and SGD loop as Cleaner.fit, minus the per-epoch
            # mixture fits (done offline): the training trajectory is identical.
            xt = torch.as_tensor(x)[:, None]
            torch.manual_seed(seed)
            mean, std = input_statistics(xt)
            model = create_model(args.model, tuple(xt.shape[1:]), 10, mean, std)
            cfg = TrainConfig(lr=args.lr, max_epochs=args.epochs, seed=seed,
                              device=str(resolve_device(args.device)))
            trainer = Trainer(model, xt, noisy, cfg)
            w0, c0 = time.perf_counter(), time.process_time()
            losses, margins, preds, train_loss, eval_loss, secs = [], [], [], [], [], []
            tr_losses, tr_margins, test_acc = [], [], []
            for _ in range(args.epochs):
                st = trainer.train_epoch(record=args.record_train)
                if st.samples is not None:
                    tr_losses.append(st.samples.loss)
                    tr_margins.append(st.samples.margin)
                s = trainer.evaluate()
                if not args.no_test:
                    test_acc.append(float((trainer.evaluate(x_test, y_test).pred == y_test).mean()))
                losses.append(s.loss)
                margins.append(s.margin)
                preds.append(s.pred.astype(np.int8))
                train_loss.append(st.train_loss)
                eval_loss.append(float(s.loss.mean()))
                secs.append(st.seconds)
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            store = np.float16 if args.half else np.float32
            extra = {}
            if tr_losses:
                extra = {"train_losses": np.stack(tr_losses).astype(np.float16),
                         "train_margins": np.stack(tr_margins).astype(np.float16)}
            np.savez_compressed(
                path, losses=np.stack(losses).astype(store),
                margins=np.stack(margins).astype(store), preds=np.stack(preds),
                given=noisy, true=y, mask=mask, train_loss=np.array(train_loss),
                eval_loss=np.array(eval_loss), seconds_train=np.array(secs),
                wall=wall, cpu=cpu, test_acc=np.array(test_acc), device=cfg.device, **extra,
            )
            print(f"{path.name}: {wall:.0f}s wall, {cpu:.0f}s cpu", flush=True)


if __name__ == "__main__":
    main()
