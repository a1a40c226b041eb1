"""Throughput of labelclean's training loop against a plain PyTorch loop.

Measures, in one process and on the same data, model and batch size:

(a) a minimal plain PyTorch loop: ``TensorDataset`` + ``DataLoader(shuffle=True)``
    over pre-normalised float tensors, SGD with momentum;
(b) labelclean's ``Trainer.train_epoch`` (uint8 tensor, normalisation in the model);
(c) (b) plus all observation: the eval-mode per-sample loss pass, the loss
    mixture, and the order-parameter probe (with the clean/mislabelled split);
(d) (b) with ``loss_pass="train"`` plus mixture and probe (losses kept from
    the training pass).

Images per second are reported for each, and the ratios (b)/(a), (c)/(b),
(d)/(b); the epochs alternate between variants so a noisy neighbour hits all
alike. Also the per-epoch time for several N, to show it is linear.

    python examples/bench_speed.py --n 10000 --epochs 2 --threads 2
    python examples/bench_speed.py --scaling 2500 10000 40000 --epochs 1
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from labelclean.cleaner import _input_statistics
from labelclean.mixture import fit_loss_mixture
from labelclean.models import create_model
from labelclean.noise import inject_noise
from labelclean.order_parameters import probe_order_parameters
from labelclean.training import TrainConfig, Trainer

MNIST = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "mnist.npz"


def mnist(n: int, noise: float = 0.4, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    d = np.load(MNIST)
    idx = np.random.default_rng(seed).choice(60_000, n, replace=n > 60_000)
    y, _ = inject_noise(d["y_train"][idx], 10, noise, "symmetric", seed=seed)
    return torch.from_numpy(d["x_train"][idx][:, None].copy()), y


def plain_epoch(model, loader, opt) -> float:
    start = time.perf_counter()
    model.train()
    for xb, yb in loader:
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def observe(trainer: Trainer, losses, split_from_mixture: bool = True) -> None:
    mixture = fit_loss_mixture(losses)
    split = mixture.posterior(losses) > 0.5 if split_from_mixture else None
    probe_order_parameters(
        trainer.model, trainer.x, trainer.y, batch_size=trainer.config.batch_size, split=split
    )


def compare(n: int, model_name: str, epochs: int, batch_size: int) -> dict:
    x, y = mnist(n)
    mean, std = _input_statistics(x)
    torch.manual_seed(0)
    build = lambda: create_model(model_name, (1, 28, 28), 10, mean, std)  # noqa: E731
    # (a) the plain loop trains the bare network on pre-normalised floats
    plain = build().body
    xf = ((x.float() - mean) / std).contiguous()
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(xf, torch.from_numpy(y)), batch_size=batch_size,
        shuffle=True,
    )
    opt = torch.optim.SGD(plain.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    cfg = TrainConfig(batch_size=batch_size, lr=0.1)
    tb, tc, td = (Trainer(build(), x, y, cfg) for _ in range(3))
    times = {"a": [], "b": [], "c": [], "d": []}
    for _ in range(epochs):
        times["a"].append(plain_epoch(plain, loader, opt))
        times["b"].append(tb.train_epoch().seconds)
        start = time.perf_counter()
        tc.train_epoch()
        observe(tc, tc.evaluate().loss)
        times["c"].append(time.perf_counter() - start)
        start = time.perf_counter()
        stats = td.train_epoch(record=True)
        observe(td, stats.samples.loss)
        times["d"].append(time.perf_counter() - start)
    best = {k: min(v) for k, v in times.items()}  # least disturbed epoch of each
    return {
        "n": n, "model": model_name, "batch_size": batch_size, "epochs": epochs,
        "seconds_per_epoch": best,
        "images_per_second": {k: n / v for k, v in best.items()},
        "ratio_b_over_a": best["a"] / best["b"],
        "overhead_c_over_b": best["c"] / best["b"] - 1,
        "overhead_d_over_b": best["d"] / best["b"] - 1,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--model", default="regnetx_002")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--scaling", type=int, nargs="*", default=None,
                    help="time one labelclean epoch (with observation) at each N")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out: dict = {"threads": args.threads, "torch": torch.__version__}
    if args.scaling:
        rows = []
        for n in args.scaling:
            x, y = mnist(n)
            mean, std = _input_statistics(x)
            t = Trainer(create_model(args.model, (1, 28, 28), 10, mean, std), x, y,
                        TrainConfig(batch_size=args.batch_size, lr=0.1))
            secs = []
            for _ in range(args.epochs):
                start = time.perf_counter()
                t.train_epoch()
                observe(t, t.evaluate().loss)
                secs.append(time.perf_counter() - start)
            best = min(secs)
            rows.append({"n": n, "seconds_per_epoch": best, "us_per_image": 1e6 * best / n})
            print(rows[-1], flush=True)
        out["scaling"] = rows
    else:
        out["compare"] = compare(args.n, args.model, args.epochs, args.batch_size)
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
