"""Reproduce the MNIST figures of Feng & Tu (2021) with labelclean on a CPU.

The paper's set-up: a fully connected 784-30-30-10 ReLU network
(``model="mlp:30,30"``) trained by plain SGD on MNIST, once with clean labels
(section 3, figures 1-2) and once with a fraction ``rho = 0.5`` of the labels
replaced by a random other class (section 4-5, figures 3-6). The supplement
with the paper's hyper-parameters is not available; the defaults here (a
4000-image subset, lr 0.05, no momentum, no weight decay, B = 32) were chosen
so that all four phases occur within a few CPU minutes (see
docs/reproduction.md).

Runs, all through :class:`labelclean.Cleaner` with ``patience > max_epochs``
so that training continues through phases III and IV:

* ``noisy``: rho = 0.5 symmetric noise with the true mask, order parameters
  probed every ``--probe-every`` epochs with ``K = --K`` minibatches for the
  mixture-estimated split (labelclean's default) and the true split
  (``*_true`` columns); weights are snapshotted at every probe so that the
  noise spectrum can be measured afterwards at one epoch per phase with
  ``--spectrum-K`` minibatches;
* ``zoom``: the first ``--zoom-epochs`` epochs of the same trajectory again,
  probed every ``--zoom-every`` SGD steps (phase I can be shorter than an
  epoch); checked to coincide with the ``noisy`` run at the end of epoch 1;
* ``clean``: rho = 0, order parameters every epoch;
* ``sweep``: rho in ``--sweep-rhos`` without probes, for the test-error
  minimum ``t_m`` (figure 3C).

Outputs under ``--out`` (default ``docs/figures``): ``repro_*.csv`` (per-epoch
histories, spectra, the sweep, the zoom), ``repro_summary.json`` (every
number quoted in docs/reproduction.md) and the figures ``repro_fig*.png``.
Per-sample losses go to ``--work`` (default ``bench_out/reproduce``) so that
``--plot-only`` can redraw everything without training.

    python studies/reproduce_paper.py                 # everything, ~6 CPU minutes
    python studies/reproduce_paper.py --plot-only     # redraw from the saved files
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from labelclean import Cleaner, observers  # noqa: E402
from labelclean.models import (
    create_model,  # noqa: E402
    input_statistics,  # noqa: E402
)
from labelclean.noise import inject_noise  # noqa: E402
from labelclean.observers import EpochContext, Observer, ObserverSetup  # noqa: E402
from labelclean.order_parameters import (  # noqa: E402
    SPLIT_KEYS,  # noqa: E402
    collect_gradient_gram,
    effective_dimension,
    probe_order_parameters,
)
from labelclean.phases import label_phases, phase_boundaries  # noqa: E402
from labelclean.sources import Dataset  # noqa: E402
from labelclean.training import TrainConfig, Trainer, epoch_order  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: The hidden 30x30 weight matrix of the 784-30-30-10 network (900 parameters).
LAYER_900 = "body.net.3.weight"
MNIST = ROOT / ".." / "shared" / "datasets" / "mnist.npz"
PHASE_COLOURS = {
    "I": "#c6dbef",
    "II": "#c7e9c0",
    "III": "#fdd0a2",
    "IV": "#dadaeb",
    "fast learning": "#c6dbef",
    "exploration": "#dadaeb",
}


# --------------------------------------------------------------------------- data and runs


def load_subset(path: Path, n: int, seed: int):
    d = np.load(path)
    idx = np.sort(np.random.default_rng(seed).choice(len(d["y_train"]), n, replace=False))
    return d["x_train"][idx], d["y_train"][idx].astype(np.int64), d["x_test"], d["y_test"]


class Snapshots(Observer):
    """Keeps a copy of the weights at every probed epoch (the spectra are measured
    on them afterwards)."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.weights: dict[int, dict] = {}

    def on_epoch_end(self, context: EpochContext) -> dict:
        if self.every and context.epoch % self.every == 0:
            self.weights[context.epoch] = {
                k: v.detach().clone() for k, v in context.trainer.model.state_dict().items()
            }
        return {}


def fit_with_snapshots(cleaner: Cleaner, *args, **kwargs):
    """``cleaner.fit(...)`` with a :class:`Snapshots` observer registered for this
    fit only; returns ``(result, {epoch: weights})``."""
    made: list[Snapshots] = []

    def factory(setup: ObserverSetup) -> Snapshots:
        made.append(Snapshots(int(setup.settings.probe_every)))
        return made[-1]

    observers.register("snapshots", factory)
    try:
        res = cleaner.fit(*args, **kwargs)
    finally:
        observers.unregister("snapshots")
    return res, made[0].weights


def make_cleaner(args, epochs: int, probe_every: int) -> Cleaner:
    return Cleaner(
        model="mlp:30,30",
        lr=args.lr,
        momentum=args.momentum,
        weight_decay=0.0,
        batch_size=args.batch_size,
        max_epochs=epochs,
        patience=epochs + 1,
        seed=args.seed,
        device="cpu",
        score="delta_L",  # t_c = argmax of the paper's delta_L
        window=1,  # single-epoch losses, as in the paper
        probe_every=probe_every,
        probe_batches=args.K,
        spectrum=True,
    )


def add_errors(history: pd.DataFrame, margins: np.ndarray, mask: np.ndarray | None) -> None:
    """Training errors w.r.t. the given labels, overall and on the clean / mislabelled parts."""
    wrong = margins < 0  # the given label's logit is not the largest
    history["eps_tr"] = wrong.mean(1)
    if mask is not None and mask.any():
        history["eps_c"] = wrong[:, ~mask].mean(1)
        history["eps_w"] = wrong[:, mask].mean(1)
    if "val_accuracy" in history:
        history["eps_te"] = 1.0 - history["val_accuracy"]


def true_split_phases(history: pd.DataFrame) -> pd.Series:
    """Phases from the order parameters of the true split (``*_true`` columns)."""
    h = history.copy()
    for k in SPLIT_KEYS:
        if f"{k}_true" in h:
            h[k] = h[f"{k}_true"]
    return label_phases(h, noisy=True)


def loss_auc(losses: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per epoch, P(loss of a mislabelled sample > loss of a clean one) (ROC AUC)."""
    out = []
    n_w, n_c = int(mask.sum()), int((~mask).sum())
    for row in losses:
        ranks = pd.Series(row).rank().to_numpy()
        out.append((ranks[mask].sum() - n_w * (n_w + 1) / 2) / (n_w * n_c))
    return np.asarray(out)


def run_noisy(args, x, y, xt, yt, work: Path, out: Path) -> None:
    noisy, mask = inject_noise(y, 10, args.rho, seed=args.seed)
    ds = Dataset.from_arrays(x, noisy)
    val = Dataset.from_arrays(xt, yt)
    cleaner = make_cleaner(args, args.epochs, args.probe_every)
    t0 = time.process_time()
    res, snapshots = fit_with_snapshots(cleaner, ds, val=val, noise_mask=mask)
    cpu_fit = time.process_time() - t0
    h = res.history
    add_errors(h, res.margins, mask)
    h["phase_mixture"] = h.get("phase", pd.Series(["unknown"] * len(h)))
    h["phase_true"] = true_split_phases(h).to_numpy()
    h["delta_L_true"] = h["L_w_true"] - h["L_c_true"]
    h["loss_auc"] = loss_auc(res.losses, mask)
    h.to_csv(out / "repro_noisy_history.csv", index=False)
    np.savez_compressed(work / "noisy_losses.npz", losses=res.losses, mask=mask)

    torch.save(snapshots, work / "noisy_snapshots.pt")

    t2 = time.process_time()
    zoom, phase1_state = run_zoom(args, ds, mask, snapshots.get(1))
    zoom.to_csv(out / "repro_zoom.csv", index=False)
    torch.save(phase1_state, work / "zoom_phase1_state.pt")
    cpu_zoom = time.process_time() - t2
    meta = {
        "cpu_seconds_fit": cpu_fit,
        "cpu_seconds_zoom": cpu_zoom,
        "wall_seconds_fit": res.timing["total_seconds"],
        "t_c": res.t_c,
        "n_mislabelled": int(mask.sum()),
    }
    (work / "noisy_meta.json").write_text(json.dumps(meta, indent=1))


def middle_epochs(history: pd.DataFrame, column: str, available) -> dict[str, int]:
    """For each phase, the available (snapshotted) epoch nearest its middle."""
    bounds = phase_boundaries(history[column], history["epoch"])
    return {
        name: min(available, key=lambda e, m=(a + b) / 2: abs(e - m))
        for name, (a, b) in bounds.items()
    }


def run_spectra(args, x, y, xt, yt, work: Path, out: Path) -> None:
    """Noise spectra (figs 2 and 5) at one epoch per phase, and D_s against K."""
    t0 = time.process_time()
    meta = {}
    ks = sorted({32, 64, 128, 256, 512, args.spectrum_K})
    for name, labels, column in (("noisy", None, "phase_true"), ("clean", y, "phase_clean")):
        hist_path = out / f"repro_{name}_history.csv"
        snap_path = work / f"{name}_snapshots.pt"
        if not (hist_path.exists() and snap_path.exists()):
            continue
        if labels is None:
            labels, _ = inject_noise(y, 10, args.rho, seed=args.seed)
        ds = Dataset.from_arrays(x, labels)
        snaps = torch.load(snap_path)
        h = pd.read_csv(hist_path)
        epochs = middle_epochs(h, column, snaps)
        states = {name_: snaps[ep] for name_, ep in epochs.items()}
        if name == "noisy" and (work / "zoom_phase1_state.pt").exists():
            z = torch.load(work / "zoom_phase1_state.pt")
            key = f"I (zoom, step {z['step']})"
            states = {key: z["state"], **states}
            epochs = {key: z["step"] / z["steps_per_epoch"], **epochs}
        spectrum_rows(ds, states, epochs, args).to_csv(
            out / f"repro_{name}_spectra.csv", index=False
        )
        # Convergence of D_s with the number of sampled gradients, at each phase's epoch.
        # Also over the 900 weights of the 30x30 layer alone: the paper's figure 2 quotes
        # N_p = 900, which is that layer's size, not the network's (24 790).
        rows = []
        for ph, state in states.items():
            for weights in (None, LAYER_900):
                for k in ks:
                    ev = spectrum_of(
                        ds, state, k, args, seed=int(1000 * epochs[ph]) + k, only=weights
                    )
                    rows.append(
                        {
                            "run": name,
                            "phase": ph,
                            "epoch": epochs[ph],
                            "K": k,
                            "weights": weights or "all",
                            "D_s": effective_dimension(ev),
                            "D": float(ev.sum()),
                        }
                    )
        meta[name] = rows
    pd.DataFrame([r for v in meta.values() for r in v]).to_csv(
        out / "repro_spectrum_vs_K.csv", index=False
    )
    (work / "spectra_meta.json").write_text(
        json.dumps({"cpu_seconds": time.process_time() - t0}, indent=1)
    )


def spectrum_of(ds: Dataset, state: dict, k: int, args, seed: int, only: str | None = None):
    """Resolved eigenvalues of C from ``k`` minibatch gradients (of parameter ``only``, or all)."""
    mean, std = input_statistics(ds.x)
    model = create_model("mlp:30,30", ds.input_shape, ds.num_classes, mean, std)
    model.load_state_dict(state)
    if only is not None:  # the probe differentiates the trainable parameters only
        for name, p in model.named_parameters():
            p.requires_grad_(name == only)
    gen = torch.Generator().manual_seed(args.seed * 101 + seed)
    gram = collect_gradient_gram(
        model,
        ds.x,
        torch.as_tensor(ds.y),
        batch_size=args.batch_size,
        num_batches=k,
        generator=gen,
    )
    return gram.eigenvalues()


def spectrum_rows(ds: Dataset, states: dict, epochs: dict, args) -> pd.DataFrame:
    """The ``spectrum_K - 1`` resolved eigenvalues of C at each given state (one per phase)."""
    rows = []
    for name, state in states.items():
        ev = spectrum_of(ds, state, args.spectrum_K, args, seed=int(1000 * epochs[name]))
        d_s = effective_dimension(ev)
        for rank, e in enumerate(ev, 1):
            rows.append(
                {"phase": name, "epoch": epochs[name], "rank": rank, "eigenvalue": e, "D_s": d_s}
            )
    return pd.DataFrame(rows)


def run_zoom(args, ds: Dataset, mask: np.ndarray, epoch1_state: dict | None):
    """Replay the first epochs of the noisy run step by step, probing every few steps.

    Same initialisation and batch order as :class:`Cleaner` (``torch.manual_seed(seed)``,
    :func:`create_model`, :class:`Trainer`, :func:`epoch_order`). Returns the probes and
    the weights at step ``--zoom-spectrum-step`` (inside phase I, for its spectrum).
    """
    torch.manual_seed(args.seed)
    mean, std = input_statistics(ds.x)
    model = create_model("mlp:30,30", ds.input_shape, ds.num_classes, mean, std)
    cfg = TrainConfig(
        lr=args.lr,
        momentum=args.momentum,
        weight_decay=0.0,
        batch_size=args.batch_size,
        max_epochs=args.zoom_epochs,
        seed=args.seed,
        device="cpu",
    )
    trainer = Trainer(model, ds.x, ds.y, cfg)
    n = len(ds.y)
    rows = []
    step = 0
    steps_per_epoch = None
    phase1 = None
    for epoch in range(args.zoom_epochs):
        batches = list(epoch_order(args.seed, epoch, n).split(args.batch_size))
        if len(batches) > 1 and len(batches[-1]) == 1:
            batches[-2:] = [torch.cat(batches[-2:])]
        steps_per_epoch = steps_per_epoch or len(batches)
        for idx in batches:
            if step == args.zoom_spectrum_step:
                phase1 = {
                    "step": step,
                    "steps_per_epoch": steps_per_epoch,
                    "state": {k: v.detach().clone() for k, v in trainer.model.state_dict().items()},
                }
            if step % args.zoom_every == 0:
                gen = torch.Generator().manual_seed(args.seed * 7 + step)
                op = probe_order_parameters(
                    trainer.model,
                    trainer.x,
                    trainer.y,
                    batch_size=args.batch_size,
                    num_batches=args.K,
                    split=mask,
                    generator=gen,
                )
                rows.append({"step": step, "epoch": step / steps_per_epoch, **op})
            trainer.model.train()
            loss = F.cross_entropy(trainer.model(trainer.x[idx]), trainer.y[idx])
            trainer.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            trainer.optimizer.step()
            step += 1
        if epoch == 0 and epoch1_state is not None:
            same = all(
                torch.equal(v, epoch1_state[k]) for k, v in trainer.model.state_dict().items()
            )
            print(f"zoom: weights after epoch 1 identical to the Cleaner run: {same}", flush=True)
    return pd.DataFrame(rows), phase1


def run_clean(args, x, y, xt, yt, work: Path, out: Path) -> None:
    ds = Dataset.from_arrays(x, y)
    cleaner = make_cleaner(args, args.clean_epochs, args.probe_every)
    t0 = time.process_time()
    res, snapshots = fit_with_snapshots(cleaner, ds, val=Dataset.from_arrays(xt, yt))
    cpu_fit = time.process_time() - t0
    h = res.history
    add_errors(h, res.margins, None)
    h["phase_clean"] = label_phases(h, noisy=False).to_numpy()
    h.to_csv(out / "repro_clean_history.csv", index=False)
    torch.save(snapshots, work / "clean_snapshots.pt")
    meta = {"cpu_seconds_fit": cpu_fit, "wall_seconds_fit": res.timing["total_seconds"]}
    (work / "clean_meta.json").write_text(json.dumps(meta, indent=1))


def run_sweep(args, x, y, xt, yt, work: Path, out: Path) -> None:
    rows = []
    t0 = time.process_time()
    for rho in args.sweep_rhos:
        if rho > 0:
            noisy, mask = inject_noise(y, 10, rho, seed=args.seed)
        else:
            noisy, mask = y, None
        res = make_cleaner(args, args.sweep_epochs, 0).fit(
            Dataset.from_arrays(x, noisy), val=Dataset.from_arrays(xt, yt), noise_mask=mask
        )
        for _, r in res.history.iterrows():
            rows.append(
                {
                    "rho": rho,
                    "epoch": int(r["epoch"]),
                    "eps_te": 1 - r["val_accuracy"],
                    "train_loss": r["train_loss"],
                }
            )
        print(f"sweep rho={rho}: done", flush=True)
    pd.DataFrame(rows).to_csv(out / "repro_tm_sweep.csv", index=False)
    (work / "sweep_meta.json").write_text(
        json.dumps({"cpu_seconds": time.process_time() - t0}, indent=1)
    )


# --------------------------------------------------------------------------- plots


def shade(ax, epochs, phases, label=True) -> None:
    ep = np.asarray(epochs, dtype=float)
    ph = np.asarray(phases, dtype=object)
    start = 0
    for i in range(1, len(ph) + 1):
        if i == len(ph) or ph[i] != ph[start]:
            name = ph[start]
            if name in PHASE_COLOURS:
                lo = ep[start] - 0.5
                hi = ep[i - 1] + 0.5
                ax.axvspan(lo, hi, color=PHASE_COLOURS[name], alpha=0.6, lw=0, zorder=0)
                if label:
                    ax.text(
                        np.sqrt(max(lo, 0.5) * hi) if ax.get_xscale() == "log" else (lo + hi) / 2,
                        0.98,
                        name,
                        transform=ax.get_xaxis_transform(),
                        ha="center",
                        va="top",
                        fontsize=8,
                        color="0.3",
                    )
            start = i


def fig3a(h: pd.DataFrame, out: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    shade(ax, h["epoch"], h["phase_true"])
    ax.plot(h["epoch"], h["eps_c"], label=r"$\epsilon_c$ (clean part)")
    ax.plot(h["epoch"], h["eps_w"], label=r"$\epsilon_w$ (mislabelled part)")
    ax.plot(h["epoch"], h["eps_tr"], "k:", label=r"$\epsilon_{tr}$")
    ax.plot(h["epoch"], h["eps_te"], "r", label=r"$\epsilon_{te}$ (test)")
    tm = int(h.loc[h["eps_te"].idxmin(), "epoch"])
    ax.axvline(tm, color="r", ls="--", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("error")
    ax.set_title(r"fig 3A: $\rho$ = 0.5, phases from the true split; $t_m$ dashed", fontsize=9)
    ax.legend(fontsize=8, loc="center left")
    fig.tight_layout()
    fig.savefig(out / "repro_fig3a_errors.png", dpi=120)
    plt.close(fig)


def fig4(h: pd.DataFrame, zoom: pd.DataFrame | None, out: Path) -> None:
    fig, axes = plt.subplots(4, 1, figsize=(7, 11), sharex=True)
    e = h["epoch"]
    ax = axes[0]
    shade(ax, e, h["phase_true"])
    ax.plot(e, h["A"], "k", label="A")
    ax.plot(e, h["A_c_true"], label=r"$A_c$")
    ax.plot(e, h["A_w_true"], label=r"$A_w$")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.set_title("fig 4: activities (true split); shading = phases from the true split", fontsize=9)
    ax = axes[1]
    shade(ax, e, h["phase_true"], label=False)
    ax.plot(e, h["A_0"].where(h["A_0"] > 0), "k", label=r"$A_0$")
    ax.plot(e, h["A_0c_true"].where(h["A_0c_true"] > 0), "C0", label=r"$A_{0c}$ true")
    ax.plot(e, h["A_0w_true"].where(h["A_0w_true"] > 0), "C1", label=r"$A_{0w}$ true")
    if "A_0c" in h:
        ax.plot(e, h["A_0c"].where(h["A_0c"] > 0), "C0:", label=r"$A_{0c}$ mixture")
        ax.plot(e, h["A_0w"].where(h["A_0w"] > 0), "C1:", label=r"$A_{0w}$ mixture")
    ax.set_yscale("log")
    ax.legend(fontsize=7, ncol=2)
    ax = axes[2]
    shade(ax, e, h["phase_true"], label=False)
    ax.plot(e, h["R_cw_true"], "C3", label=r"$R_{cw}$ true split")
    if "R_cw" in h:
        ax.plot(e, h["R_cw"], "C3:", label=r"$R_{cw}$ mixture split")
    ax.axhline(0, color="k", lw=0.5)
    ax.axhline(-1, color="k", lw=0.5, ls=":")
    ax.set_ylim(-1.1, 1.1)
    ax.legend(fontsize=8)
    ax = axes[3]
    shade(ax, e, h["phase_mixture"], label=True)
    ax.plot(e, h["R"], "k", label="R")
    ax.plot(e, h["R_ac_true"], label=r"$R_{ac}$")
    ax.plot(e, h["R_aw_true"], label=r"$R_{aw}$")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_ylim(-1.1, 1.1)
    ax.legend(fontsize=8)
    ax.set_title("shading here = phases labelclean labels from the mixture split", fontsize=9)
    ax.set_xscale("log")
    ax.set_xlabel("epoch")
    fig.tight_layout()
    fig.savefig(out / "repro_fig4_order_parameters.png", dpi=120)
    plt.close(fig)

    if zoom is None or zoom.empty:
        return
    fig, axes = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    ax = axes[0]
    ax.plot(zoom["epoch"], zoom["A_0c"], label=r"$A_{0c}$")
    ax.plot(zoom["epoch"], zoom["A_0w"], label=r"$A_{0w}$")
    ax.plot(zoom["epoch"], zoom["A"], "k", label="A")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.set_title("phase I zoom: true split, probed every few SGD steps", fontsize=9)
    ax = axes[1]
    ax.plot(zoom["epoch"], zoom["R_cw"], "C3", label=r"$R_{cw}$")
    ax.plot(zoom["epoch"], zoom["R"], "k", label="R")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel("epoch (fraction)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "repro_fig4_zoom_phase1.png", dpi=120)
    plt.close(fig)


def fig1(h: pd.DataFrame, out: Path) -> None:
    fig, axes = plt.subplots(5, 1, figsize=(6, 10), sharex=True)
    e = h["epoch"]
    series = [
        ("eval_loss", "L", True),
        ("eps_tr", r"$\epsilon_{tr}$", True),
        ("A", "A", True),
        ("R", "R", False),
        ("sigma_lambda2", r"$\sigma_\lambda^2$", True),
    ]
    for ax, (col, name, log) in zip(axes, series):
        shade(ax, e, h["phase_clean"], label=ax is axes[0])
        v = h[col]
        if log:
            v = v.where(v > 0)
            ax.set_yscale("log")
        ax.plot(e, v, "k.-", ms=3, lw=0.8)
        ax.set_ylabel(name)
        if col == "R":
            ax.axhline(0, color="k", ls=":", lw=0.8)
        if col == "sigma_lambda2":
            neg = h[col] <= 0
            ax.plot(
                e[neg],
                np.full(neg.sum(), np.nanmin(v) if v.notna().any() else 1),
                "rv",
                ms=4,
                label=r"estimate $\leq 0$ / NaN",
            )
            if neg.any():
                ax.legend(fontsize=7)
    axes[0].set_title("fig 1: no label noise (L = eval-pass loss after each epoch)", fontsize=9)
    axes[-1].set_xscale("log")
    axes[-1].set_xlabel("epoch")
    fig.tight_layout()
    fig.savefig(out / "repro_fig1_clean.png", dpi=120)
    plt.close(fig)


def fig6(h: pd.DataFrame, losses: np.ndarray, mask: np.ndarray, out: Path) -> list[int]:
    phases = h["phase_true"].to_numpy()
    epochs = h["epoch"].to_numpy()
    picks = [1]
    for name in ("II", "III", "IV"):
        sel = epochs[phases == name]
        if len(sel):
            picks.append(
                int(sel[len(sel) // 2])
                if name != "II"
                else int(h.loc[h["delta_L_true"].idxmax(), "epoch"])
            )
    picks = sorted(set(picks))
    fig, axes = plt.subplots(1, len(picks) + 1, figsize=(3.2 * (len(picks) + 1), 3.2))
    for ax, ep in zip(axes, picks):
        row = losses[ep - 1]
        bins = np.linspace(0, np.percentile(row, 99.5), 60)
        ax.hist(row[~mask], bins, density=True, alpha=0.6, label=r"$P_c$ clean")
        ax.hist(row[mask], bins, density=True, alpha=0.6, label=r"$P_w$ mislabelled")
        ax.set_title(f"epoch {ep} ({phases[ep - 1]})", fontsize=9)
        ax.set_xlabel("per-sample loss l")
        ax.set_yscale("log")
    axes[0].legend(fontsize=7)
    ax = axes[-1]
    shade(ax, epochs, phases)
    ax.plot(epochs, h["delta_L_true"], "k", label=r"$L_w - L_c$ (true)")
    ax.plot(epochs, h["delta_L"], "C2:", label=r"$m_w - m_c$ (mixture)")
    ax2 = ax.twinx()
    ax2.plot(epochs, h["loss_auc"], "C4", lw=0.8, label="loss AUC")
    ax2.set_ylim(0.5, 1.0)
    ax.set_xscale("log")
    ax.set_xlabel("epoch")
    ax.legend(fontsize=7, loc="upper left")
    ax2.legend(fontsize=7, loc="lower left")
    fig.suptitle("fig 6A: loss distributions and their separation (rho = 0.5)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "repro_fig6_losses.png", dpi=120)
    plt.close(fig)
    return picks


def fig_spectra(noisy, clean, vs_k, k: int, out: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    panels = ((axes[0], clean, "no noise (fig 2)"), (axes[1], noisy, "rho = 0.5 (fig 5)"))
    for ax, df, title in panels:
        if df is None or df.empty:
            continue
        ins = ax.inset_axes([0.45, 0.5, 0.5, 0.45])
        for name, g in df.groupby("phase", sort=False):
            ev = g["eigenvalue"].to_numpy()
            lab = (
                f"{name} (ep {g['epoch'].iloc[0]}), D = {ev.sum():.3g}, "
                f"D_s = {g['D_s'].iloc[0]:.0f}"
            )
            ax.plot(g["rank"], np.where(ev > 0, ev, np.nan), label=lab)
            ins.plot(g["rank"], np.cumsum(ev) / ev.sum())
        ins.axhline(0.9, color="k", lw=0.5, ls=":")
        ins.set_ylim(0, 1.02)
        ins.tick_params(labelsize=6)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("rank l")
        ax.set_ylabel("eigenvalue $e_l$ of C")
        ax.set_title(f"{title}; K = {k}: at most {k - 1} eigenvalues resolved", fontsize=9)
        ax.legend(fontsize=7, loc="lower left")
    ax = axes[2]
    if vs_k is not None:
        if "weights" not in vs_k:
            vs_k = vs_k.assign(weights="all")
        colours = {}
        for (run, ph, w), g in vs_k.groupby(["run", "phase", "weights"], sort=False):
            c = colours.setdefault((run, ph), f"C{len(colours)}")
            full = w == "all"
            ax.plot(
                g["K"],
                g["D_s"],
                "o-" if full else "s--",
                ms=3,
                color=c,
                label=f"{run}: {ph}" if full else None,
            )
        ax.plot([], [], "k-", label="all 24 790 weights")
        ax.plot([], [], "k--", label="30x30 layer (900)")
        kk = np.array(sorted(vs_k["K"].unique()))
        ax.plot(kk, kk - 1, "k:", label="K - 1 (bound)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.set_xlabel("K (sampled minibatch gradients)")
        ax.set_ylabel("$D_s$ (90 % of the variance)")
        ax.legend(fontsize=7)
        ax.set_title("effective dimension $D_s$ against K", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "repro_fig2_5_spectra.png", dpi=120)
    plt.close(fig)


def fig3c(sweep: pd.DataFrame, noisy: pd.DataFrame, out: Path) -> pd.DataFrame:
    df = sweep.copy()
    if noisy is not None:
        n = noisy[noisy["epoch"] <= df["epoch"].max()]
        df = pd.concat(
            [
                df,
                pd.DataFrame(
                    {
                        "rho": noisy["rho_true"].iloc[0] if "rho_true" in noisy else 0.5,
                        "epoch": n["epoch"],
                        "eps_te": n["eps_te"],
                        "train_loss": n["train_loss"],
                    }
                ),
            ]
        )
    rows = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for rho, g in df.groupby("rho"):
        g = g.sort_values("epoch")
        i = g["eps_te"].idxmin()
        t_m, e_m = int(g.loc[i, "epoch"]), float(g.loc[i, "eps_te"])
        sm = g["eps_te"].rolling(5, center=True, min_periods=1).mean()
        t_m_s = int(g.loc[sm.idxmin(), "epoch"])
        rows.append(
            {
                "rho": rho,
                "t_m": t_m,
                "eps_m": e_m,
                "t_m_smoothed5": t_m_s,
                "eps_at_end": float(g["eps_te"].iloc[-1]),
                "epochs": int(g["epoch"].max()),
            }
        )
        ax.plot(g["epoch"], g["eps_te"], label=f"rho={rho:g}: t_m={t_m}")
        ax.plot(t_m, e_m, "k.")
    ax.set_xscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("test error")
    ax.legend(fontsize=8)
    ax.set_title("fig 3B/C: test error and its minimum t_m for several rho", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "repro_fig3c_tm.png", dpi=120)
    plt.close(fig)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- claims


def _med(s) -> float:
    s = pd.to_numeric(s, errors="coerce").dropna()
    return float(s.median()) if len(s) else float("nan")


def summarise(noisy, clean, zoom, tm, picks, out: Path, work: Path) -> dict:
    s: dict = {}
    for name in ("noisy", "clean", "sweep", "spectra"):
        p = work / f"{name}_meta.json"
        if p.exists():
            s[f"{name}_meta"] = json.loads(p.read_text())
    if noisy is not None:
        h = noisy
        s["phases_true_split"] = phase_boundaries(h["phase_true"], h["epoch"])
        s["phases_mixture_split"] = phase_boundaries(h["phase_mixture"], h["epoch"])
        agree = (h["phase_true"] == h["phase_mixture"]).mean()
        s["phase_label_agreement"] = float(agree)
        per = {}
        for ph, g in h.groupby("phase_true", sort=False):
            per[ph] = {
                "epochs": [int(g["epoch"].min()), int(g["epoch"].max())],
                "R_cw_true_median": _med(g["R_cw_true"]),
                "R_cw_true_min": float(g["R_cw_true"].min()),
                "R_cw_true_max": float(g["R_cw_true"].max()),
                "frac_R_cw_true_below_-0.5": float((g["R_cw_true"] < -0.5).mean()),
                "frac_R_cw_true_positive": float((g["R_cw_true"] > 0).mean()),
                "R_cw_mixture_median": _med(g.get("R_cw", pd.Series(dtype=float))),
                "A_median": _med(g["A"]),
                "A_max": float(g["A"].max()),
                "A_0c_true_median": _med(g["A_0c_true"]),
                "A_0w_true_median": _med(g["A_0w_true"]),
                "ratio_A0c_A0w_median": _med(g["A_0c_true"] / g["A_0w_true"]),
                "A_0_median": _med(g["A_0"]),
                "ratio_A0_A0c_median": _med(g["A_0"] / g["A_0c_true"]),
                "eps_te_median": _med(g["eps_te"]),
                "delta_L_true_median": _med(g["delta_L_true"]),
                "loss_auc_median": _med(g["loss_auc"]),
            }
        s["per_phase_true"] = per
        i_a = h["A"].idxmax()
        s["A_peak"] = {
            "epoch": int(h.loc[i_a, "epoch"]),
            "A": float(h.loc[i_a, "A"]),
            "phase": h.loc[i_a, "phase_true"],
        }
        s["A_last"] = float(h["A"].iloc[-1])
        for col in ("delta_L_true", "delta_L", "loss_auc"):
            i = h[col].idxmax()
            s[f"{col}_max"] = {
                "epoch": int(h.loc[i, "epoch"]),
                "value": float(h.loc[i, col]),
                "phase": h.loc[i, "phase_true"],
            }
        i = h["eps_te"].idxmin()
        s["t_m"] = {
            "epoch": int(h.loc[i, "epoch"]),
            "eps_te": float(h.loc[i, "eps_te"]),
            "phase": h.loc[i, "phase_true"],
        }
        s["final"] = {k: float(h[k].iloc[-1]) for k in ("eps_c", "eps_w", "eps_te", "train_loss")}
        first = h.iloc[0]
        s["epoch1"] = {
            k: float(first[k])
            for k in ("A_0c_true", "A_0w_true", "R_cw_true", "eps_c", "eps_w", "eps_te")
        }
        s["mixture_bimodal_epochs"] = int(h["bimodal"].sum())
        both = h[["R_cw", "R_cw_true"]].dropna() if "R_cw" in h else pd.DataFrame()
        if len(both) > 2:
            s["R_cw_mixture_vs_true"] = {
                "corr": float(both.corr().iloc[0, 1]),
                "mean_abs_diff": float((both["R_cw"] - both["R_cw_true"]).abs().mean()),
                "epochs_with_both": len(both),
            }
        s["t_c"] = int(h.loc[h["delta_L"].idxmax(), "epoch"])
        s["true_f1_at_t_c"] = float(h.loc[h["delta_L"].idxmax(), "true_f1"])
        s["true_f1_max"] = {
            "epoch": int(h.loc[h["true_f1"].idxmax(), "epoch"]),
            "value": float(h["true_f1"].max()),
        }
        s["loss_hist_epochs"] = picks
        up_to_tm = h[h["epoch"] <= s["t_m"]["epoch"]]
        s["R_cw_true_up_to_t_m"] = {
            "median": _med(up_to_tm["R_cw_true"]),
            "min": float(up_to_tm["R_cw_true"].min()),
            "max": float(up_to_tm["R_cw_true"].max()),
        }
        bim = h[h["bimodal"].astype(bool)]
        if len(bim):
            i = bim["delta_L"].idxmax()
            s["delta_L_max_bimodal_only"] = {
                "epoch": int(h.loc[i, "epoch"]),
                "value": float(h.loc[i, "delta_L"]),
                "true_f1": float(h.loc[i, "true_f1"]),
            }
        i = h["delta_L"].idxmax()
        s["t_c_bimodal"] = bool(h.loc[i, "bimodal"])
        s["bimodal_epochs"] = [int(e) for e in h.loc[h["bimodal"].astype(bool), "epoch"]]
        first_pos = h.loc[h["R_cw_true"] > 0, "epoch"]
        s["first_epoch_R_cw_true_positive"] = int(first_pos.min()) if len(first_pos) else None
    if zoom is not None and not zoom.empty:
        z = zoom
        ratio = z["A_0c"] / z["A_0w"]
        s["zoom"] = {
            "step0": {k: float(z[k].iloc[0]) for k in ("A_0c", "A_0w", "R_cw", "R")},
            "max_ratio_A0c_A0w": float(ratio.max()),
            "epoch_of_max_ratio": float(z.loc[ratio.idxmax(), "epoch"]),
            "first_epoch_ratio_below_4_after_max": float(
                z.loc[(ratio < 4) & (z.index > ratio.idxmax()), "epoch"].min()
            ),
            "first_epoch_ratio_below_1.5": float(z.loc[ratio < 1.5, "epoch"].min()),
            "R_cw_median_first_epoch": _med(z.loc[z["epoch"] < 1, "R_cw"]),
            "R_cw_at_end": float(z["R_cw"].iloc[-1]),
            "min_R_cw": float(z["R_cw"].min()),
        }
    if clean is not None:
        c = clean
        s["clean_phases"] = phase_boundaries(c["phase_clean"], c["epoch"])
        per = {}
        for ph, g in c.groupby("phase_clean", sort=False):
            per[ph] = {
                "R_median": _med(g["R"]),
                "A_median": _med(g["A"]),
                "sigma_lambda2_median": _med(g["sigma_lambda2"]),
                "sigma_lambda2_nonpositive_or_nan": int(
                    (~(pd.to_numeric(g["sigma_lambda2"]) > 0)).sum()
                ),
                "eps_tr_median": _med(g["eps_tr"]),
                "n": len(g),
            }
        s["clean_per_phase"] = per
        s["clean_first_eps_tr_zero"] = (
            int(c.loc[c["eps_tr"] == 0, "epoch"].min()) if (c["eps_tr"] == 0).any() else None
        )
        s["clean_first_eps_tr_below_1pct"] = (
            int(c.loc[c["eps_tr"] < 0.01, "epoch"].min()) if (c["eps_tr"] < 0.01).any() else None
        )
        s["clean_A_epoch1_last"] = [float(c["A"].iloc[0]), float(c["A"].iloc[-1])]
    if tm is not None:
        s["t_m_vs_rho"] = tm.to_dict(orient="records")
    for name in ("noisy", "clean"):
        p = out / f"repro_{name}_spectra.csv"
        if p.exists():
            sp = pd.read_csv(p)
            s[f"{name}_spectra"] = {
                ph: {
                    "epoch": float(g["epoch"].iloc[0]),
                    "D": float(g["eigenvalue"].sum()),
                    "D_s": float(g["D_s"].iloc[0]),
                    "top_eigenvalue_share": float(g["eigenvalue"].max() / g["eigenvalue"].sum()),
                }
                for ph, g in sp.groupby("phase", sort=False)
            }
    p = out / "repro_spectrum_vs_K.csv"
    if p.exists():
        vk = pd.read_csv(p)
        if "weights" not in vk:
            vk = vk.assign(weights="all")
        s["D_s_vs_K"] = {
            f"{r}:{ph}:{w}": dict(zip(g["K"].astype(int).astype(str), g["D_s"]))
            for (r, ph, w), g in vk.groupby(["run", "phase", "weights"], sort=False)
        }
    (out / "repro_summary.json").write_text(json.dumps(_finite(s), indent=1, default=str))
    return s


def _finite(obj):
    """NaN / inf -> None, so that the summary is strict JSON."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


# --------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--mnist", type=Path, default=MNIST)
    ap.add_argument("--n-train", type=int, default=4000)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--momentum", type=float, default=0.0)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rho", type=float, default=0.5)
    ap.add_argument("--epochs", type=int, default=250, help="noisy run")
    ap.add_argument("--clean-epochs", type=int, default=120)
    ap.add_argument("--probe-every", type=int, default=1)
    ap.add_argument("--K", type=int, default=64, help="minibatches per probe")
    ap.add_argument("--spectrum-K", type=int, default=256)
    ap.add_argument("--zoom-epochs", type=int, default=2)
    ap.add_argument("--zoom-every", type=int, default=5, help="SGD steps between zoom probes")
    ap.add_argument(
        "--zoom-spectrum-step",
        type=int,
        default=15,
        help="SGD step of the zoom at which the phase-I spectrum is taken",
    )
    ap.add_argument(
        "--sweep-rhos", type=lambda s: [float(v) for v in s.split(",")], default=[0.0, 0.2, 0.8]
    )
    ap.add_argument("--sweep-epochs", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--runs",
        default="noisy,clean,sweep,spectra",
        help="subset of noisy,clean,sweep,spectra (spectra needs the first two)",
    )
    ap.add_argument("--plot-only", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "figures")
    ap.add_argument("--work", type=Path, default=ROOT / "bench_out" / "reproduce")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)

    if not args.plot_only:
        x, y, xt, yt = load_subset(args.mnist, args.n_train, args.seed)
        runs = set(args.runs.split(","))
        steps = (
            ("noisy", run_noisy),
            ("clean", run_clean),
            ("sweep", run_sweep),
            ("spectra", run_spectra),
        )
        for name, fn in steps:
            if name in runs:
                t0 = time.process_time()
                fn(args, x, y, xt, yt, args.work, args.out)
                print(f"{name}: {time.process_time() - t0:.0f} CPU s", flush=True)

    def read(name):
        p = args.out / name
        return pd.read_csv(p) if p.exists() else None

    noisy, clean = read("repro_noisy_history.csv"), read("repro_clean_history.csv")
    zoom, sweep = read("repro_zoom.csv"), read("repro_tm_sweep.csv")
    picks, tm = [], None
    if noisy is not None:
        fig3a(noisy, args.out)
        fig4(noisy, zoom, args.out)
        z = np.load(args.work / "noisy_losses.npz")
        picks = fig6(noisy, z["losses"], z["mask"], args.out)
    if clean is not None:
        fig1(clean, args.out)
    fig_spectra(
        read("repro_noisy_spectra.csv"),
        read("repro_clean_spectra.csv"),
        read("repro_spectrum_vs_K.csv"),
        args.spectrum_K,
        args.out,
    )
    if sweep is not None:
        tm = fig3c(sweep, noisy, args.out)
    s = summarise(noisy, clean, zoom, tm, picks, args.out, args.work)
    print(json.dumps(s, indent=1, default=str))


if __name__ == "__main__":
    main()
