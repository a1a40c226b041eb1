"""labelclean's offline rule vs cleanlab, per setting and seed, with compute.

Reads the out-of-sample probabilities saved by ``cv_probs.py`` and runs
``cleanlab.filter.find_label_issues`` on them (``filter_by`` =
``prune_by_noise_rate``, cleanlab's default, and ``predicted_neq_given``);
reads labelclean's decisions on the *same noisy labels* (same MNIST subset,
same ``inject_noise`` seed) from the per-rule table of ``tc_rules.py
--report``; and prints both side by side.

Compute is counted in passes over the training data, machine-independent:
a training pass (forward + backward) counts 1, a forward-only pass 1/3.

* labelclean to its decision: ``stop`` epochs of training plus ``stop``
  eval-mode loss passes, where ``stop = t_c + patience`` (the online rule
  stops ``patience`` epochs after its last improvement; a run that never
  finds a population trains to the end of the sweep);
* cleanlab: ``K`` trainings on ``(K-1)/K`` of the data for ``E`` epochs each
  plus one forward pass over the held-out folds.

Measured CPU seconds of the cross-validation (``cv_probs.py``) and of the
labelclean sweep's training epochs up to ``stop`` are printed too.

    python studies/cleanlab_eval.py --cv bench_out/cv --rules bench_out/tc_rt/rules_eval.csv \\
        --sweeps bench_out/tc_rt --rule auto2 --csv bench_out/cleanlab_vs_labelclean.csv
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import pandas as pd

from labelclean.noise import precision_recall_f1

PATIENCE = 5


def cleanlab_rows(path: Path) -> list[dict]:
    from cleanlab.filter import find_label_issues

    d = np.load(path)
    probs, given, mask = d["probs"].astype(np.float64), d["given"], d["mask"].astype(bool)
    probs /= probs.sum(1, keepdims=True)
    k, e, n = int(d["folds"]), int(d["epochs"]), len(given)
    passes = k * (k - 1) / k * e + 1 / 3
    rows = []
    for filt in ("prune_by_noise_rate", "predicted_neq_given"):
        flags = np.asarray(find_label_issues(given, probs, filter_by=filt), bool)
        p, r, f = precision_recall_f1(flags, mask)
        rows.append({"method": f"cleanlab/{filt}", "precision": p, "recall": r, "f1": f,
                     "flagged": float(flags.mean()), "passes": passes,
                     "cpu_s": float(d["cpu"]), "note": f"{k}-fold x {e} epochs, n={n}"})
    return rows


def parse(stem: str) -> tuple[str, str, int]:
    m = re.match(r"(?:cv_)?(.+)_(symmetric|pairflip|classdep)([0-9.]+)_s(\d+)", stem)
    if not m:
        raise ValueError(stem)
    return m.group(1), f"{m.group(2)} {m.group(3)}", int(m.group(4))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--cv", type=Path, required=True, help="folder of cv_*.npz")
    ap.add_argument("--rules", type=Path, nargs="+", required=True,
                    help="per-rule tables written by tc_rules.py --report")
    ap.add_argument("--sweeps", type=Path, nargs="+", required=True,
                    help="folders of the tc_sweep.py runs the rules were read from")
    ap.add_argument("--rule", default="auto2")
    ap.add_argument("--csv", type=Path, default=None)
    args = ap.parse_args()
    rules = pd.concat([pd.read_csv(p) for p in args.rules], ignore_index=True)
    rules = rules[rules.rule == args.rule]
    rows = []
    for path in sorted(args.cv.glob("cv_*.npz")):
        model, setting, seed = parse(path.stem)
        key = {"model": model, "setting": setting, "seed": seed}
        for row in cleanlab_rows(path):
            rows.append({**key, **row})
        run = path.stem[3:]
        match = rules[rules.run == run]
        sweep = next((p / f"{run}.npz" for p in args.sweeps if (p / f"{run}.npz").exists()), None)
        if match.empty or sweep is None:
            continue
        r = match.iloc[0]
        d = np.load(sweep)
        epochs = len(d["train_loss"])
        # a run that never finds a population has t_c = its last epoch
        stop = min(int(r.t_c) + PATIENCE, epochs)
        cpu = float(np.sum(d["seconds_train"][:stop]))
        f1 = float(r.f1)
        rows.append({**key, "method": f"labelclean/{args.rule}", "precision": np.nan,
                     "recall": np.nan, "f1": f1, "flagged": float(r.flagged),
                     "passes": stop * (1 + 1 / 3), "cpu_s": cpu,
                     "note": f"t_c={int(r.t_c)}, stop={stop}; cpu_s = training epochs only"})
    df = pd.DataFrame(rows)
    if df.empty:
        raise SystemExit("nothing to compare")
    summary = df.groupby(["model", "setting", "method"]).agg(
        f1=("f1", "mean"), f1_sd=("f1", "std"), flagged=("flagged", "mean"),
        passes=("passes", "mean"), cpu_s=("cpu_s", "mean"), seeds=("f1", "size"))
    with pd.option_context("display.width", 200, "display.max_rows", 500):
        print(summary.to_string(float_format="{:.3f}".format))
    if args.csv:
        df.to_csv(args.csv, index=False)


if __name__ == "__main__":
    main()
