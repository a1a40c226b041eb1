"""Compare rules for choosing ``t_c`` and flagging, offline, on runs saved by tc_sweep.py.

For every saved run the two-component mixture is fitted at every epoch to each
candidate per-sample score; each epoch's flags are scored against the true
mask (the best epoch is the *oracle*), and each candidate rule picks its epoch
and flags without the truth. Nothing but the evaluation uses the mask.

    python studies/tc_rules.py bench_out/tc/mlp30-30_*.npz --csv bench_out/tc/rules_mlp30.csv

The library's own rule is replayed, never re-implemented: ``default`` feeds each
saved run through :meth:`labelclean.decision.TcPolicy.replay` (the object
``Cleaner.fit`` uses) and scores the flags of its verdict, withheld runs
flagging nothing. The other rules are the earlier candidates, kept as
recorded baselines for the comparison:
``paper`` (single-epoch loss, global argmax of ``delta_L``),
``v0`` (the 0.1.0 default: 3-epoch mean loss, online peak of Ashman's D,
patience 5), ``logloss`` (3-epoch mean log-loss, online peak of the mixture's
expected F1), ``aum`` (t_c = online peak of the AUM mixture's expected F1;
flags AUM < 0 where some mixture is bimodal), and variants.
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from labelclean import mixture as mixmod
from labelclean.decision import TcPolicy, suggested_labels, suspicion_scores
from labelclean.mixture import fit_loss_mixture
from labelclean.noise import precision_recall_f1


def prf(flags: np.ndarray, mask: np.ndarray) -> float:
    """F1 of ``flags`` against the true ``mask``."""
    return precision_recall_f1(flags, mask)[2]


def online_peak(values, train_loss, patience: int = 5, spike_ratio: float = 2.0,
                min_gain: float = 0.0) -> int:
    """Index PhaseIIDetector's online rule picks (first peak, patience, spike guard).

    An epoch improves on the best only when it beats it by ``min_gain``
    (relative), so a slow creep does not keep resetting the patience.
    """
    best, best_v, since, lo = -1, -np.inf, 0, np.inf
    for t, (v, tl) in enumerate(zip(values, train_loss, strict=True)):
        unstable = tl > spike_ratio * lo
        lo = min(lo, tl)
        bar = best_v + min_gain * abs(best_v) if np.isfinite(best_v) else -np.inf
        if not unstable and np.isfinite(v) and v > bar:
            best, best_v, since = t, v, 0
        else:
            since += 1
        if best >= 0 and since >= patience:
            break
    return max(best, 0)


def run_name(path: Path, source: str = "eval", every: int = 1) -> str:
    """A saved run's name in the per-epoch table, with its replay variant as a suffix."""
    name = path.stem if every == 1 else f"{path.stem}_every{every}"
    return name + ("_" + source.replace(":", "") if source.startswith("hybrid:") else "")


def per_epoch(path: Path, source: str = "eval", every: int = 1) -> pd.DataFrame:
    """Per epoch and per suspicion: mixture statistics and the flags' true F1.

    ``source="train"`` reads the losses and margins recorded during the
    training pass (``tc_sweep.py --record-train``) instead of the eval pass;
    ``source="hybrid:E"`` those of the eval pass for epochs 1..E and of the
    training pass after (the run's name gets the suffix ``_hybridE``).
    ``every=s`` keeps only every ``s``-th epoch's measurements (epochs s, 2s,
    ...), as a run with ``Cleaner(observe_every=s)`` would have seen them; the
    run's name gets the suffix ``_every{s}``.
    """
    d = np.load(path)
    if source.startswith("hybrid:"):  # the eval pass for epochs 1..E, the training pass after
        e = int(source.split(":")[1])
        L = np.concatenate([d["losses"][:e], d["train_losses"][e:]]).astype(np.float32)
        M = np.concatenate([d["margins"][:e], d["train_margins"][e:]]).astype(np.float32)
    else:
        prefix = "train_" if source == "train" else ""
        L = d[prefix + "losses"].astype(np.float32)
        M = d[prefix + "margins"].astype(np.float32)
    L, M = L[every - 1 :: every], M[every - 1 :: every]
    train_loss = d["train_loss"][every - 1 :: every]
    mask = d["mask"]
    run = run_name(path, source, every)
    rows = []
    for t in range(len(L)):
        row = {"run": run, "epoch": (t + 1) * every, "every": every,
               "train_loss": float(train_loss[t]), "true_rate": float(mask.mean())}
        for name, kind, window in (("loss1", "loss", 1), ("loss3", "loss", 3),
                                   ("logloss3", "logloss", 3), ("aum", "aum", 0)):
            s = suspicion_scores(L[: t + 1], M[: t + 1], kind, window)
            m = fit_loss_mixture(s, seed=0)
            flags = (s > m.threshold) if m.bimodal else np.zeros(len(s), bool)
            row.update({f"{name}_f1": prf(flags, mask), f"{name}_dL": m.delta_L,
                        f"{name}_D": m.separation, f"{name}_ef1": m.expected_f1,
                        f"{name}_bimodal": m.bimodal, f"{name}_r": m.r,
                        f"{name}_flagged": float(flags.mean())})
            if name == "aum":
                neg = s > 0
                row.update({"aum0_f1": prf(neg, mask), "aum0_flagged": float(neg.mean())})
        rows.append(row)
    return pd.DataFrame(rows)


def replay_default(path: Path, every: int = 1, batch_size: int = 128) -> dict:
    """The library's ``t_c`` policy on one saved run (eval-pass measurements).

    The saved runs hold no step counts: each epoch counts ``ceil(N / batch_size)``
    steps (tc_sweep.py trains at batch 128). ``classes_learned`` comes from the
    saved eval-pass predictions, as in ``Cleaner.fit``.
    """
    d = np.load(path)
    L, M = d["losses"].astype(np.float32), d["margins"].astype(np.float32)
    preds, given = d["preds"].astype(np.int64), d["given"].astype(np.int64)
    L, M, preds = L[every - 1 :: every], M[every - 1 :: every], preds[every - 1 :: every]
    k = int(max(given.max(), preds.max())) + 1
    steps = every * math.ceil(len(given) / batch_size)
    history = pd.DataFrame({
        "epoch": np.arange(1, len(L) + 1) * every,
        "steps": steps,
        "train_loss": d["train_loss"][every - 1 :: every],
        "classes_learned": [TcPolicy.classes_learned(p, given, k) for p in preds],
    })
    policy = TcPolicy.replay(history, L, M, k)
    at_tc = int(np.searchsorted(history["epoch"].to_numpy(), policy.t_c))
    verdict, flags = policy.verdict(policy.best, given, [str(c) for c in range(k)],
                                    suggested=suggested_labels(preds[at_tc], None, given))
    return {"t_c": int(policy.t_c), "f1": prf(flags, d["mask"]),
            "flagged": float(flags.mean()), "verdict": verdict.status}


def warm_peak(values, noisy, train_loss, patience: int = 5, min_epoch: int = 1,
              min_gain: float = 0.0) -> int:
    """The 0.2 detector: online peak whose patience starts at the first noisy epoch.

    An epoch is *noisy* when the AUM or the loss mixture is bimodal; before the
    first one nothing counts towards patience. Never noisy: the last epoch.
    """
    noisy = np.asarray(noisy, bool)
    if not noisy.any():
        return len(values) - 1
    start = max(int(np.argmax(noisy)), min_epoch - 1)
    if start >= len(values):
        return len(values) - 1
    return start + online_peak(np.asarray(values)[start:], np.asarray(train_loss)[start:],
                               patience, min_gain=min_gain)


def auto2(g: pd.DataFrame, min_gain: float = 0.0, min_epoch: int = 3,
          patience: int = 5) -> int:
    """The 0.2 default rule, in epochs whatever the observation stride of ``g``:
    the search starts at the first observed epoch >= ``min_epoch`` and stops
    after ``patience`` epochs (rounded up to whole observations) without a new peak."""
    every = int(g["every"].fillna(1).iloc[0]) if "every" in g else 1
    first = int(np.searchsorted(g.epoch.to_numpy(), min_epoch)) + 1
    return warm_peak(g.aum_D, g.gate3, g.train_loss, patience=math.ceil(patience / every),
                     min_epoch=first, min_gain=min_gain)


RULES = {
    "paper": lambda g: (int(np.argmax(np.where(g.loss1_bimodal, g.loss1_dL, -np.inf))),
                        "loss1_f1"),
    "v0": lambda g: (online_peak(g.loss3_D, g.train_loss), "loss3_f1"),
    "loss3_ef1": lambda g: (online_peak(g.loss3_ef1, g.train_loss), "loss3_f1"),
    "logloss": lambda g: (online_peak(g.logloss3_ef1, g.train_loss), "logloss3_f1"),
    "logloss_D": lambda g: (online_peak(g.logloss3_D, g.train_loss), "logloss3_f1"),
    "aum_gmm": lambda g: (online_peak(g.aum_ef1, g.train_loss), "aum_f1"),
    "aum0": lambda g: (online_peak(g.aum_ef1, g.train_loss), "aum0_gated_f1"),
    "aum0_tc_logloss": lambda g: (online_peak(g.logloss3_ef1, g.train_loss), "aum0_gated_f1"),
    "aum0_tc_D": lambda g: (online_peak(g.aum_D, g.train_loss), "aum0_gated_f1"),
    "auto": lambda g: (warm_peak(g.aum_D, g.aum_bimodal | g.loss3_bimodal, g.train_loss),
                       "aum0_gate2_f1"),
    # 0.2: also a population when AUM's mixture is moderately separated (D >= 1.5)
    # and at least MIN_AUM_POPULATION of the samples have AUM < 0, two epochs running
    # (from then on the population counts as established)
    "auto2": lambda g: (auto2(g), "aum0_gate3_f1"),
    "auto2_gain1": lambda g: (auto2(g, min_gain=0.01), "aum0_gate3_f1"),
    "auto2_gain2": lambda g: (auto2(g, min_gain=0.02), "aum0_gate3_f1"),
    "auto2_min1": lambda g: (warm_peak(g.aum_D, g.gate3, g.train_loss), "aum0_gate3_f1"),
    "auto2_min2": lambda g: (warm_peak(g.aum_D, g.gate3, g.train_loss, min_epoch=2),
                             "aum0_gate3_f1"),
}
#: see "auto2": the share of AUM < 0 that counts as a population when D >= 1.5
MIN_AUM_POPULATION = 0.10
AUM_MIN_SEPARATION = 1.25


def setting_of(run: str) -> tuple[str, str]:
    m = re.match(r"(.+)_(symmetric|pairflip|classdep)([0-9.]+)_s(\d+)(.*)", run)
    return (m.group(1) + m.group(5), f"{m.group(2)} {m.group(3)}") if m else (run, "")


def report(df: pd.DataFrame, defaults: dict[str, dict] | None = None) -> pd.DataFrame:
    """One row per run and rule; ``defaults`` maps a run to :func:`replay_default`'s result."""
    rows = []
    df = df.copy()
    df["aum0_gated_f1"] = [
        f if gate else 0.0
        for f, gate in zip(df.aum0_f1, df.aum_bimodal | df.logloss3_bimodal | df.loss3_bimodal,
                           strict=True)
    ]
    gate2 = df.aum_bimodal | df.loss3_bimodal
    df["aum0_gate2_f1"] = np.where(gate2, df.aum0_f1, 0.0)
    df["aum0_gate2_flagged"] = np.where(gate2, df.aum0_flagged, 0.0)
    cond = (df.aum_D >= AUM_MIN_SEPARATION) & (df.aum0_flagged >= MIN_AUM_POPULATION)
    before = cond.groupby(df.run).shift(1, fill_value=False).astype(bool)
    established = (cond & before).astype(int).groupby(df.run).cummax().astype(bool)
    df["gate3"] = gate2 | established
    df["aum0_gate3_f1"] = np.where(df.gate3, df.aum0_f1, 0.0)
    df["aum0_gate3_flagged"] = np.where(df.gate3, df.aum0_flagged, 0.0)
    df["aum0_gated_flagged"] = np.where(
        df.aum_bimodal | df.logloss3_bimodal | df.loss3_bimodal, df.aum0_flagged, 0.0)
    for run, g in df.groupby("run", sort=False):
        g = g.sort_values("epoch").reset_index(drop=True)
        model, setting = setting_of(run)
        oracle = g.loss1_f1.max()
        for name, rule in RULES.items():
            t, col = rule(g)
            flagged_col = col.replace("_f1", "_flagged")
            rows.append({"model": model, "setting": setting, "run": run, "rule": name,
                         "t_c": int(g.epoch[t]), "f1": g[col][t],
                         "flagged": g[flagged_col][t] if flagged_col in g else np.nan,
                         "rule_oracle": g[col].max(),
                         "rule_oracle_epoch": int(g.epoch[g[col].idxmax()]),
                         "paper_oracle": oracle,
                         "paper_oracle_epoch": int(g.epoch[g.loss1_f1.idxmax()])})
        if defaults and run in defaults:
            r = defaults[run]
            rows.append({"model": model, "setting": setting, "run": run, "rule": "default",
                         "t_c": r["t_c"], "f1": r["f1"], "flagged": r["flagged"],
                         "verdict": r["verdict"], "paper_oracle": oracle,
                         "paper_oracle_epoch": int(g.epoch[g.loss1_f1.idxmax()])})
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--csv", type=Path, required=True, help="per-epoch table (a cache)")
    ap.add_argument("--report", type=Path, default=None, help="write the per-rule table here")
    ap.add_argument("--source", default="eval",
                    help="per-sample losses from the eval pass (eval), the training pass "
                    "(train), or the eval pass for epochs 1..E and the training pass after "
                    "(hybrid:E)")
    ap.add_argument("--every", type=int, default=1,
                    help="replay a run that observes only every EVERY-th epoch")
    ap.add_argument("--fit-points", type=int, default=5000,
                    help="subsample for each mixture fit (the library uses 20000)")
    args = ap.parse_args()
    mixmod.MAX_FIT_POINTS = args.fit_points
    old = pd.read_csv(args.csv) if args.csv.exists() else pd.DataFrame({"run": []})
    parts = [old] + [per_epoch(p, args.source, args.every) for p in args.runs
                   if run_name(p, args.source, args.every) not in set(old.run)]
    df = pd.concat(parts, ignore_index=True)
    df.to_csv(args.csv, index=False)
    defaults = ({run_name(p, args.source, args.every): replay_default(p, args.every)
                 for p in args.runs} if args.source == "eval" else {})
    rep = report(df, defaults)
    if args.report:
        rep.to_csv(args.report, index=False)
    rep["gap"] = rep.paper_oracle - rep.f1
    summary = rep.groupby(["model", "setting", "rule"]).agg(
        f1=("f1", "mean"), f1_sd=("f1", "std"), t_c=("t_c", "mean"), flagged=("flagged", "mean"),
        gap=("gap", "mean"), paper_oracle=("paper_oracle", "mean"), seeds=("f1", "size"))
    with pd.option_context("display.width", 200, "display.max_rows", 500):
        print(summary.to_string(float_format="{:.3f}".format))


if __name__ == "__main__":
    main()
