"""Replay saved runs through today's ``t_c`` policy and verdict, offline.

A changed decision rule can be checked on every run already on disk without
training again: the run folder keeps what :class:`labelclean.decision.TcPolicy`
reads (``metrics.csv``, ``losses.npy``, ``margins.npy``; the labels and the
suggested labels at ``t_c`` in ``scores.csv``). The replay must reach the run's
own ``t_c`` (it is checked); the verdict is today's rules on it. With the
zoo's ``truth.json`` beside the run folder the flags are scored too.

    python studies/replay_verdict.py bench_out/zoo_cifar/*/run bench_out/zoo_small/*/run
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from labelclean.decision import TcPolicy
from labelclean.noise import precision_recall_f1

#: The run.json params that are TcPolicy settings.
POLICY_PARAMS = ("suspicion", "score", "window", "patience", "seed", "min_steps",
                 "patience_steps")


def replay(run_dir: Path) -> dict:
    run = json.loads((run_dir / "run.json").read_text())
    classes = json.loads((run_dir / "checkpoint" / "model.json").read_text())["classes"]
    index = {str(c): i for i, c in enumerate(classes)}
    history = pd.read_csv(run_dir / "metrics.csv")
    if "first_visit_z" in history and "first_visit_steps" not in history:  # a 0.4 run
        history["first_visit_steps"] = history["steps"].iloc[0]
    scores = pd.read_csv(run_dir / "scores.csv", dtype={"given_label": str,
                                                         "suggested_label": str,
                                                         "predicted_label": str})
    scores = scores.sort_values("index")
    y = scores["given_label"].map(index).to_numpy()
    suggested = scores["suggested_label"].map(index).to_numpy()
    predicted = scores["predicted_label"].astype(str).map(index).to_numpy()
    params = {k: run["params"][k] for k in POLICY_PARAMS}
    policy = TcPolicy.replay(history, np.load(run_dir / "losses.npy"),
                             np.load(run_dir / "margins.npy"), len(classes), **params)
    if policy.t_c != run["t_c"]:
        raise SystemExit(f"{run_dir}: the replay reached t_c = {policy.t_c}, the run {run['t_c']}")
    verdict, flags = policy.verdict(policy.best, y, [str(c) for c in classes],
                                    suggested=suggested, predicted=predicted)
    row = {"run": str(run_dir), "t_c": policy.t_c, "verdict_then": run["verdict"]["status"],
           "verdict_now": verdict.status, "flagged_now": float(flags.mean()),
           "reason": verdict.reason}
    truth_file = run_dir.parent / "truth.json"
    if truth_file.exists():
        truth = json.loads(truth_file.read_text())["truth"]
        mask = scores["sample_id"].astype(str).map(truth).to_numpy(dtype=bool)
        forced = policy.best.would_flag if policy.best.noisy else np.zeros_like(flags)
        row["f1_now"] = precision_recall_f1(flags, mask)[2]
        row["f1_forced"] = precision_recall_f1(np.asarray(forced, bool), mask)[2]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--csv", type=Path, default=None)
    rows = [replay(r) for r in ap.parse_args().runs]
    df = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_colwidth", 60):
        print(df.drop(columns="reason").to_string(index=False))
    for r in rows:
        if r["verdict_now"] == "withheld":
            print(f"\n{r['run']}: {r['reason']}")
    args = ap.parse_args()
    if args.csv:
        df.to_csv(args.csv, index=False)


if __name__ == "__main__":
    main()
