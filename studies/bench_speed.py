"""Throughput of labelclean's training loop against a plain PyTorch loop.

Measures, in one process and on the same data, model and batch size:

(a) a minimal plain PyTorch loop: ``TensorDataset`` + ``DataLoader(shuffle=True)``
    over pre-normalised float tensors, SGD with momentum;
(b) labelclean's ``Trainer.train_epoch`` (uint8 tensor, normalisation in the model);
(c) (b) plus all observation every epoch: the eval-mode per-sample pass, the
    two mixture fits of the AUM rule, and the order-parameter probe (with the
    clean/mislabelled split), each part timed on its own;
(d) (b) with ``loss_pass="train"`` plus mixture and probe (losses kept from
    the training pass);
(e) with ``--compile``: (b) with ``TrainConfig(compile=True)`` (the compile
    itself, in the first epoch, is reported apart);
(b0) (b) in the default layout (``channels_last=False``, the CPU default
    before 0.7), and in (c) the eval pass as 0.6 ran it (``eval_pass_0_6``:
    the unfolded model in the default layout at batch 1024) beside today's
    (``eval_pass``: batch norms folded, cache-sized batches, channels-last).

Images per second are reported for each, and the ratios (b)/(a), (c)/(b),
(d)/(b); the epochs alternate between variants so a noisy neighbour hits all
alike. ``overhead_default_schedule`` is the observation overhead of a default
``Cleaner``: eval pass and mixtures every epoch, the probe every
``probe_interval``-th. Also the per-epoch time for several N, to show it is
linear.

    python studies/bench_speed.py --n 10000 --epochs 2 --threads 2
    python studies/bench_speed.py --scaling 2500 10000 40000 --epochs 1

On a lent GPU (the data must travel with the command: pack it first):

    python studies/bench_speed.py --pack-cifar ../shared/datasets/cifar10n_dev cifar10n.npz
    python studies/bench_speed.py --device cuda --threads 8 --cifar cifar10n.npz --n 50000 \
        --epochs 0 --time-to-tc --tc-sizes 50000 10000
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from labelclean.mixture import fit_loss_mixture
from labelclean.models import create_model, default_model, input_statistics
from labelclean.noise import inject_noise
from labelclean.observers import probe_interval
from labelclean.order_parameters import probe_order_parameters
from labelclean.training import TrainConfig, Trainer, resolve_device

MNIST = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "mnist.npz"


def mnist(n: int, noise: float = 0.4, seed: int = 0, path: Path = MNIST):
    d = np.load(path)
    idx = np.random.default_rng(seed).choice(60_000, n, replace=n > 60_000)
    y, _ = inject_noise(d["y_train"][idx], 10, noise, "symmetric", seed=seed)
    return torch.from_numpy(d["x_train"][idx][:, None].copy()), y


LABEL_SETS = ("clean", "worse", "aggre", "random1")


def pack_cifar(root: Path, out: Path) -> None:
    """The CIFAR-10N development set's training images, decoded once as labelclean
    reads them, with every label set, into one ``.npz``: what travels to a lent
    GPU (``../shared`` does not)."""
    import pandas as pd

    from labelclean.sources import load_dataset

    table = pd.read_csv(root / "labels.csv")
    table = table[table["path"].str.startswith("train/")]
    frame = pd.DataFrame({"path": [str(root / p) for p in table["path"]],
                          "label": table["worse"]})
    ds = load_dataset(frame)
    classes = sorted(table["clean"].unique())
    labels = {k: np.array([classes.index(c) for c in table[k]]) for k in LABEL_SETS}
    np.savez_compressed(out, x=np.asarray(ds.x), classes=np.array(classes), **labels)


def cifar_tiled(n: int, source: Path, labels: str = "worse"):
    """The CIFAR-10N development set's training images (a folder with
    ``labels.csv``, or the ``.npz`` of :func:`pack_cifar`) under the human
    ``labels``, repeated up to ``n``: CIFAR-sized data for throughput and time to
    ``t_c`` on an accelerator. Returns ``x, given labels, wrong-label mask``; a
    repeated image is a duplicate, so quality numbers at ``n`` > 10,000 are not
    CIFAR-10's."""
    if source.suffix != ".npz":
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            pack_cifar(source, Path(tmp) / "cifar10n.npz")
            return cifar_tiled(n, Path(tmp) / "cifar10n.npz", labels)
    d = np.load(source)
    reps = -(-n // len(d["clean"]))
    x = torch.as_tensor(d["x"]).repeat(reps, 1, 1, 1)[:n]
    given = np.tile(d[labels], reps)[:n]
    return x.contiguous(), given, given != np.tile(d["clean"], reps)[:n]


def synthetic_rgb(n: int, size: int = 32, seed: int = 0):
    """Random 3-channel uint8 images and labels: throughput only, nothing to learn."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    return x, torch.randint(0, 10, (n,), generator=g).numpy()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_epoch(model, loader, opt, device) -> float:
    """(a) what most users write: a DataLoader over float tensors, fp32."""
    start = time.perf_counter()
    model.train()
    for xb, yb in loader:
        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync(device)
    return time.perf_counter() - start


def plain_tuned_epoch(model, xf, yt, opt, batch_size, device) -> float:
    """(a') the same loop tuned by hand for CUDA: normalised data resident on the
    device, random permutation slicing, bf16 autocast, channels_last."""
    start = time.perf_counter()
    model.train()
    order = torch.randperm(len(yt), device=device)
    for idx in order.split(batch_size):
        xb = xf[idx].contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(xb), yt[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync(device)
    return time.perf_counter() - start


def observe(trainer: Trainer, losses, margins=None, split_from_mixture: bool = True,
            parts: dict | None = None) -> None:
    """What the cleaner does after an epoch: mixture fits (the AUM's and the loss's
    when ``margins`` are given) and the order-parameter probe with the split;
    seconds per part are added to ``parts``."""
    parts = {} if parts is None else parts
    device = trainer.device
    start = time.perf_counter()
    def on(a: np.ndarray):
        """Where the cleaner's policy fits: on CUDA the torch EM, on the device."""
        return torch.from_numpy(np.ascontiguousarray(a)).to(device) if device.type == "cuda" else a

    mixture = fit_loss_mixture(on(losses if margins is None else -margins))
    if margins is not None:
        fit_loss_mixture(on(losses))
    sync(device)
    parts["mixture"] = parts.get("mixture", 0.0) + time.perf_counter() - start
    start = time.perf_counter()
    scores = losses if margins is None else -margins
    split = mixture.posterior(scores) > 0.5 if split_from_mixture else None
    probe_order_parameters(
        trainer.model, trainer.x, trainer.y, batch_size=trainer.config.batch_size, split=split
    )
    sync(device)
    parts["probe"] = parts.get("probe", 0.0) + time.perf_counter() - start


def sgd(model):
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)


def compare(x: torch.Tensor, y: np.ndarray, model_name: str | None, epochs: int,
            batch_size: int, device: torch.device, compiled: bool = False) -> dict:
    """Seconds per epoch of (a), (a'), (b), (c), (d), (e) on the same data; see the module doc."""
    n = len(y)
    model_name = model_name or default_model("images", tuple(x.shape[1:]))
    mean, std = input_statistics(x)
    torch.manual_seed(0)
    build = lambda: create_model(model_name, tuple(x.shape[1:]), 10, mean, std)  # noqa: E731
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    # (a) the plain loop trains the bare network on pre-normalised floats
    plain = build().body.to(device)
    xf = ((x.float() - mean) / std).contiguous()
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(xf, torch.from_numpy(y)), batch_size=batch_size,
        shuffle=True, pin_memory=cuda,
    )
    opt = sgd(plain)
    variants = {"a": lambda: plain_epoch(plain, loader, opt, device)}
    if cuda:
        tuned = build().body.to(device, memory_format=torch.channels_last)
        xf_dev, y_dev, opt_t = xf.to(device), torch.from_numpy(y).to(device), sgd(tuned)
        variants["a_tuned"] = lambda: plain_tuned_epoch(tuned, xf_dev, y_dev, opt_t,
                                                        batch_size, device)
    cfg = TrainConfig(batch_size=batch_size, lr=0.1, device=str(device))
    tb, tc, td = (Trainer(build(), x, y, cfg) for _ in range(3))
    tb0 = Trainer(build(), x, y, replace(cfg, channels_last=False))
    c_parts: list[dict] = []

    def eval_0_6() -> None:
        """0.6's eval pass: the unfolded model, default layout, batch 1024."""
        model = copy.deepcopy(tc.model).to(memory_format=torch.contiguous_format).eval()
        with torch.no_grad():
            for i in range(0, n, 1024):
                model(x[i : i + 1024].to(device))

    def c_epoch():
        start = time.perf_counter()
        tc.train_epoch()
        sync(device)
        parts = {"train": time.perf_counter() - start}
        t0 = time.perf_counter()
        stats = tc.evaluate()
        sync(device)
        parts["eval_pass"] = time.perf_counter() - t0
        if device.type == "cpu":
            t0 = time.perf_counter()
            eval_0_6()
            parts["eval_pass_0_6"] = time.perf_counter() - t0
        observe(tc, stats.loss, stats.margin, parts=parts)
        c_parts.append(parts)
        # less the 0.6 eval pass it timed beside today's, which (c) does not run
        return time.perf_counter() - start - parts.get("eval_pass_0_6", 0.0)

    def d_epoch():
        start = time.perf_counter()
        stats = td.train_epoch(record=True)
        observe(td, stats.samples.loss)
        sync(device)
        return time.perf_counter() - start

    variants.update({"b": lambda: tb.train_epoch().seconds, "b0": lambda: tb0.train_epoch().seconds,
                     "c": c_epoch, "d": d_epoch})
    compile_s = None
    if compiled:
        te = Trainer(build(), x, y, TrainConfig(batch_size=batch_size, lr=0.1,
                                                device=str(device), compile=True))
        start = time.perf_counter()
        te.train_epoch()  # compiles (training graph) inside the first epoch
        compile_s = time.perf_counter() - start
        variants["e"] = lambda: te.train_epoch().seconds
    if cuda:  # one untimed warm-up epoch each (cuDNN autotuning, allocator, lazy init)
        for f in variants.values():
            f()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(epochs):
        for k, f in variants.items():
            times[k].append(f())
    best = {k: min(v) for k, v in times.items()}  # least disturbed epoch of each
    base = best.get("a_tuned", best["a"])
    probe_every = probe_interval("auto", None, n, batch_size)
    out = {
        "n": n, "input_shape": list(x.shape[1:]), "model": model_name,
        "batch_size": batch_size, "epochs": epochs, "device": _device_name(device),
        "seconds_per_epoch": best,
        "images_per_second": {k: n / v for k, v in best.items()},
        "ratio_b_over_a": best["a"] / best["b"],
        "ratio_b_over_b0": best["b0"] / best["b"],
        "ratio_b_over_best_plain": base / best["b"],
        "overhead_c_over_b": best["c"] / best["b"] - 1,
        "overhead_d_over_b": best["d"] / best["b"] - 1,
        # (c) split into its parts (least disturbed epoch of each part), and the
        # overhead with the cleaner's default schedule: eval pass and mixture fits
        # every epoch, the probe every probe_interval-th epoch
        "observe_parts_seconds": {k: min(p[k] for p in c_parts) for k in c_parts[0]},
        "probe_interval": probe_every,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    parts = out["observe_parts_seconds"]
    out["overhead_default_schedule"] = (
        parts["eval_pass"] + parts["mixture"] + parts["probe"] / probe_every
    ) / best["b"]

    if compiled:
        out["compile_first_epoch_seconds"] = compile_s
        out["ratio_e_over_b"] = best["b"] / best["e"]
    if cuda:
        out["peak_gpu_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def time_to_tc(x: torch.Tensor, y: np.ndarray, mask: np.ndarray | None, device: torch.device,
               **cleaner_kwargs) -> dict:
    """One whole ``Cleaner.fit`` (defaults unless overridden): wall time to the decision."""
    from labelclean import Cleaner, Dataset
    from labelclean.bench import evaluate_result

    cleaner_kwargs = {k: v for k, v in cleaner_kwargs.items() if v is not None}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    ds = Dataset.from_arrays(x.numpy(), y, noise_mask=mask)
    start = time.perf_counter()
    res = Cleaner(device=str(device), **cleaner_kwargs).fit(ds, noise_mask=mask)
    wall = time.perf_counter() - start
    ev = evaluate_result(res, mask) if mask is not None else {}
    out = {"n": len(y), "device": _device_name(device), **cleaner_kwargs,
           "wall_s": wall, "t_c": res.t_c, "n_flagged": res.n_flagged, "f1": ev.get("f1"),
           "verdict": str(res.verdict),
           "oracle_f1": ev.get("oracle_f1"), **res.timing,
           "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        out["peak_gpu_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--model", default=None,
                    help="default: the cleaner's default for the images (labelclean.models)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ap.add_argument("--mnist", type=Path, default=MNIST)
    ap.add_argument("--synthetic-rgb", action="store_true",
                    help="random 3x32x32 images instead of MNIST (throughput only)")
    ap.add_argument("--cifar", type=Path, default=None,
                    help="the CIFAR-10N development set's folder, or its .npz (--pack-cifar): "
                         "its images repeated up to --n")
    ap.add_argument("--scaling", type=int, nargs="*", default=None,
                    help="time one labelclean epoch (with observation) at each N")
    ap.add_argument("--time-to-tc", action="store_true",
                    help="also time whole Cleaner.fit runs on the MNIST data (40%% noise)")
    ap.add_argument("--tc-sizes", type=int, nargs="*", default=None,
                    help="--time-to-tc at these N (default: --n); the loss-pass variant "
                         "at the first")
    ap.add_argument("--pack-cifar", type=Path, nargs=2, metavar=("DIR", "NPZ"), default=None,
                    help="write the CIFAR-10N development set as one .npz for --cifar, and exit")
    ap.add_argument("--compile", action="store_true",
                    help="also (e): (b) with TrainConfig(compile=True)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.pack_cifar:
        pack_cifar(*args.pack_cifar)
        return
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    out: dict = {"threads": args.threads, "torch": torch.__version__}
    if args.scaling:
        rows = []
        for n in args.scaling:
            x, y = mnist(n, path=args.mnist)
            mean, std = input_statistics(x)
            t = Trainer(create_model(args.model or default_model("images", (1, 28, 28)),
                                     (1, 28, 28), 10, mean, std), x, y,
                        TrainConfig(batch_size=args.batch_size, lr=0.1, device=str(device)))
            secs = []
            for _ in range(args.epochs):
                start = time.perf_counter()
                t.train_epoch()
                stats = t.evaluate()
                observe(t, stats.loss, stats.margin)
                sync(device)
                secs.append(time.perf_counter() - start)
            best = min(secs)
            rows.append({"n": n, "seconds_per_epoch": best, "us_per_image": 1e6 * best / n})
            print(rows[-1], flush=True)
        out["scaling"] = rows
    elif args.epochs > 0:  # --epochs 0: only --time-to-tc
        if args.cifar:
            x, y, _ = cifar_tiled(args.n, args.cifar)
        else:
            x, y = synthetic_rgb(args.n) if args.synthetic_rgb else mnist(args.n, path=args.mnist)
        out["compare"] = compare(x, y, args.model, args.epochs, args.batch_size, device,
                                 compiled=args.compile)
        print(json.dumps(out["compare"]), flush=True)
        if args.json:
            args.json.write_text(json.dumps(out, indent=2))
    if args.time_to_tc:
        out["time_to_tc"] = []
        for i, n in enumerate(args.tc_sizes or [args.n]):
            if args.cifar:  # the human 'worse' labels are the noise; the clean ones the truth
                x, noisy, mask = cifar_tiled(n, args.cifar)
            else:
                x, y = mnist(n, noise=0.0, path=args.mnist)
                noisy, mask = inject_noise(y, 10, 0.4, "symmetric", seed=0)
            variants = [{}] + ([{"suspicion": "aum", "loss_pass": "train"}] if i == 0 else [])
            for extra in variants:
                row = time_to_tc(x, noisy, mask, device, model=args.model, **extra)
                out["time_to_tc"].append(row)
                print(json.dumps(row), flush=True)
                if args.json:  # as it arrives: a lease can end mid-run
                    args.json.write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
