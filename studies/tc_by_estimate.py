"""Would the canaries choose a better ``t_c`` than the mixture's separation?

Offline, from the folders ``studies/calibration.py`` leaves (``history_seed*.csv``,
``margins_seed*.npz``, ``estimate_inputs_seed*.npz``): for every epoch, the AUM flags
(mean margin since that epoch's ``aum_from`` below 0) scored against the truth, beside
the run's own estimate of them from its canaries (``est_precision``, ``est_recall``:
an estimated F1). It prints, per run, the ``t_c`` the run chose and the F1 there, the
epoch whose estimated F1 is highest (among the epochs after the AUM's last start, the
first learned epoch) and the true F1 there, and the best epoch in
hindsight (an oracle). Donor samples (held out for canaries) are left out.

    python studies/tc_by_estimate.py bench_out/cal10b/*/ bench_out/cal10/*/
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from labelclean.noise import precision_recall_f1


def study(folder: Path, seed: int) -> dict | None:
    hist_file, marg_file = folder / f"history_seed{seed}.csv", folder / f"margins_seed{seed}.npz"
    if not (hist_file.exists() and marg_file.exists()):
        return None
    history = pd.read_csv(hist_file)
    arrays = np.load(marg_file)
    margins, wrong = arrays["margins"].astype(np.float64), arrays["wrong"].astype(bool)
    keep = np.ones(len(wrong), dtype=bool)
    inputs = folder / f"estimate_inputs_seed{seed}.npz"
    if inputs.exists():
        keep = ~np.load(inputs)["held_out"].astype(bool)
    rows = []
    for _, h in history.iterrows():
        epoch, start = int(h["epoch"]), int(h.get("aum_from", 1) or 1)
        aum = margins[start - 1:epoch].mean(0)
        flags = (aum < 0) & keep
        p, r = h.get("est_precision", np.nan), h.get("est_recall", np.nan)
        est = 2 * p * r / (p + r) if p == p and r == r and p + r > 0 else np.nan
        rows.append({"epoch": epoch, "aum_from": start,
                     "f1": precision_recall_f1(flags, wrong & keep)[2],
                     "est_f1": est, "fit": h.get("eval_accuracy", np.nan)})
    table = pd.DataFrame(rows)
    best = table.loc[table["f1"].idxmax()]
    # only once the area has settled on its last start (the first learned epoch), and
    # not its first epoch: before it the estimate has no learned model to measure
    last = table["aum_from"].iloc[-1]
    settled = table[(table["aum_from"] == last) & (table["epoch"] > last)
                    & table["est_f1"].notna()]
    chosen = settled.loc[settled["est_f1"].idxmax()] if len(settled) else None
    return {"run": f"{folder.name} seed {seed}", "table": table, "best": best,
            "by_estimate": chosen}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--records", type=Path, nargs="*", default=[],
                    help="calibration.jsonl files whose t_c to show beside")
    args = ap.parse_args()
    chosen_tc = {}
    for file in args.records:
        for line in file.read_text().splitlines():
            r = json.loads(line)
            chosen_tc[(r["dataset"] + "_" + r["labels"], r["seed"])] = r["t_c"]
    print("| run | t_c chosen | F1 there | epoch of the highest estimated F1 | F1 there | "
          "best epoch (hindsight) | F1 there |")
    print("|---|---|---|---|---|---|---|")
    for folder in args.folders:
        for seed in range(10):
            out = study(folder, seed)
            if out is None:
                continue
            t = out["table"].set_index("epoch")
            tc = chosen_tc.get((folder.name, seed))
            at_tc = f"{t.loc[tc, 'f1']:.3f}" if tc in t.index else "-"
            e = out["by_estimate"]
            by_est = ("-", "-") if e is None else (int(e["epoch"]), f"{e['f1']:.3f}")
            print(f"| {out['run']} | {tc if tc is not None else '-'} | {at_tc} | {by_est[0]} | "
                  f"{by_est[1]} | {int(out['best']['epoch'])} | {out['best']['f1']:.3f} |")


if __name__ == "__main__":
    main()
