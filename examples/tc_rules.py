"""Compare rules for choosing ``t_c`` and flagging, offline, on runs saved by tc_sweep.py.

For each saved run and each per-sample score (loss averaged over a window,
negative margin averaged over a window, AUM up to ``t``) the two-component
mixture is fitted at every epoch; the flags of every epoch are scored against
the true mask (the *oracle* is the best epoch), and unsupervised epoch
selectors pick one epoch each. Nothing but the evaluation uses the truth.

    python examples/tc_rules.py bench_out/tc/mlp30-30_*.npz --csv bench_out/tc/rules_mlp30.csv
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from labelclean import mixture as mixmod
from labelclean.decision import estimated_f1
from labelclean.mixture import fit_loss_mixture

SCORES = {
    "loss_w1": lambda L, M, t: L[t],
    "loss_w3": lambda L, M, t: L[max(0, t - 2) : t + 1].mean(0),
    "loss_w5": lambda L, M, t: L[max(0, t - 4) : t + 1].mean(0),
    "negmargin_w1": lambda L, M, t: -M[t],
    "negmargin_w3": lambda L, M, t: -M[max(0, t - 2) : t + 1].mean(0),
    "aum": lambda L, M, t: -M[: t + 1].mean(0),
}


def f1(flags: np.ndarray, mask: np.ndarray) -> tuple[float, float, float]:
    tp = int((flags & mask).sum())
    p = tp / max(1, int(flags.sum()))
    r = tp / max(1, int(mask.sum()))
    return p, r, (0.0 if tp == 0 else 2 * p * r / (p + r))


def per_epoch(path: Path, scores: list[str]) -> pd.DataFrame:
    d = np.load(path)
    L, M, mask = d["losses"].astype(np.float64), d["margins"].astype(np.float64), d["mask"]
    rows = []
    for name in scores:
        for t in range(len(L)):
            s = SCORES[name](L, M, t)
            m = fit_loss_mixture(s, seed=0)
            flags = (s > m.threshold) if m.bimodal else np.zeros(len(s), bool)
            p = m.posterior(s)
            prec, rec, f = f1(flags, mask)
            auc = roc_auc_score(mask, s) if 0 < mask.sum() < len(mask) else np.nan
            fl_neg = M[t] < 0
            rows.append({
                "run": path.stem, "score": name, "epoch": t + 1, "true_f1": f,
                "true_precision": prec, "true_recall": rec, "auroc": auc,
                "delta_L": m.delta_L, "separation": m.separation, "r": m.r,
                "bimodal": m.bimodal, "est_f1": estimated_f1(m, s), "exp_f1": m.expected_f1,
                "n_flagged": int(flags.sum()), "true_rate": mask.mean(),
                "f1_pred_neq_given": f1(fl_neg, mask)[2],
                "f1_gmm_and_neq": f1(flags & fl_neg, mask)[2],
                "f1_gmm_or_neq": f1(flags | fl_neg, mask)[2],
                "train_loss": float(d["train_loss"][t]), "eval_loss": float(d["eval_loss"][t]),
                "p_mean_flagged": float(p[flags].mean()) if flags.any() else np.nan,
            })
    return pd.DataFrame(rows)


def online_peak(values: np.ndarray, train_loss: np.ndarray, patience: int = 5,
                spike_ratio: float = 2.0) -> int:
    """Index chosen by PhaseIIDetector's online rule (first peak + patience + spike guard)."""
    best, best_v, since, lo = -1, -np.inf, 0, np.inf
    for t, (v, tl) in enumerate(zip(values, train_loss, strict=True)):
        unstable = tl > spike_ratio * lo
        lo = min(lo, tl)
        if not unstable and np.isfinite(v) and v > best_v:
            best, best_v, since = t, v, 0
        else:
            since += 1
        if best >= 0 and since >= patience:
            break
    return max(best, 0)


SELECTORS = {
    "argmax_dL": lambda g: int(np.argmax(g.delta_L.where(g.bimodal, -np.inf).to_numpy())),
    "argmax_sep": lambda g: int(np.argmax(g.separation.to_numpy())),
    "argmax_expf1": lambda g: int(np.argmax(g.exp_f1.to_numpy())),
    "argmax_estf1": lambda g: int(np.argmax(g.est_f1.to_numpy())),
    "online_sep": lambda g: online_peak(g.separation.to_numpy(), g.train_loss.to_numpy()),
    "online_dL": lambda g: online_peak(g.delta_L.to_numpy(), g.train_loss.to_numpy()),
    "online_expf1": lambda g: online_peak(g.exp_f1.to_numpy(), g.train_loss.to_numpy()),
    "online_estf1": lambda g: online_peak(g.est_f1.to_numpy(), g.train_loss.to_numpy()),
}


def report(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, score, selector): chosen epoch, its F1, and the oracles."""
    rows = []
    paper_oracle = df[df.score == "loss_w1"].groupby("run").true_f1.max()
    any_oracle = df.groupby("run").true_f1.max()
    for (run, score), g in df.groupby(["run", "score"], sort=False):
        g = g.sort_values("epoch").reset_index(drop=True)
        for name, sel in SELECTORS.items():
            t = sel(g)
            rows.append({
                "setting": setting_of(run), "run": run, "score": score, "selector": name,
                "epoch": int(g.epoch[t]), "f1": g.true_f1[t],
                "f1_and_neq": g.f1_gmm_and_neq[t], "f1_or_neq": g.f1_gmm_or_neq[t],
                "f1_neq": g.f1_pred_neq_given[t], "auroc": g.auroc[t],
                "est_rate": g.n_flagged[t] / 20000, "true_rate": g.true_rate[t],
                "oracle_score": g.true_f1.max(), "oracle_epoch": int(g.epoch[g.true_f1.idxmax()]),
                "oracle_paper": paper_oracle.get(run, np.nan), "oracle_any": any_oracle[run],
            })
    return pd.DataFrame(rows)


def setting_of(run: str) -> str:
    m = re.match(r"(.+)_(symmetric|pairflip|classdep)([0-9.]+)_s(\d+)(.*)", run)
    return f"{m.group(1)} {m.group(2)} {m.group(3)}{m.group(5)}" if m else run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--scores", nargs="+", default=list(SCORES))
    ap.add_argument("--csv", type=Path, required=True, help="per-epoch table (cached)")
    ap.add_argument("--fit-points", type=int, default=5000)
    ap.add_argument("--report", type=Path, default=None, help="write the selector table here")
    args = ap.parse_args()
    mixmod.MAX_FIT_POINTS = args.fit_points
    old = pd.read_csv(args.csv) if args.csv.exists() else pd.DataFrame(columns=["run", "score"])
    parts = [old]
    for p in args.runs:
        have = set(old.loc[old.run == p.stem, "score"])
        todo = [s for s in args.scores if s not in have]
        if todo:
            parts.append(per_epoch(p, todo))
            print("done", p.stem, flush=True)
    df = pd.concat(parts, ignore_index=True)
    df.to_csv(args.csv, index=False)
    if args.report:
        rep = report(df)
        rep.to_csv(args.report, index=False)
        summary = rep.groupby(["setting", "score", "selector"])[["f1", "oracle_any"]].mean()
        print(summary.to_string(float_format="{:.3f}".format))


if __name__ == "__main__":
    main()
