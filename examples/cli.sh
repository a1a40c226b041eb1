#!/usr/bin/env bash
# The command line from end to end: run, read the flags, review them, apply the review.
#
#   bash examples/cli.sh [WORK]      # WORK: a new folder for everything, default ./cli_example
#
# Needs labelclean installed (`labelclean` on the PATH, e.g. an activated venv);
# about a minute on a laptop CPU. Replace step 0's data with your own folder.
set -euo pipefail
work=${1:-cli_example}
if [ -e "$work" ]; then
  echo "$work exists: name a new folder (bash examples/cli.sh WORK)" >&2
  exit 2
fi

# 0. An image folder, one sub-folder per class (data/<class>/<image>): here
#    scikit-learn's handwritten digits as 32x32 PNGs with 20% of the labels changed
#    to another class (the data `labelclean demo` uses; no download).
python -c 'import sys; from pathlib import Path
from labelclean.demo import write_digits_folder
write_digits_folder(Path(sys.argv[1]), noise=0.2, seed=0)' "$work/data"

# 1. One training run. Everything goes under --out; the input is only read.
#    `--model mlp:256,256` only to finish in seconds: leave it out on real images.
#    Exit status 3 = withheld: the run could not show its flags are right, so it
#    flagged nothing (stderr says why and what to try).
status=0
labelclean run "$work/data" --out "$work/run" --model mlp:256,256 || status=$?
if [ "$status" -ne 0 ] && [ "$status" -ne 3 ]; then
  exit "$status"
fi

# 2. The suspects, most suspicious first, each with its reason; the report shows
#    them as thumbnails beside the run's history (open it in a browser).
head -n 6 "$work/run/flagged_samples.csv"
echo "report: $work/run/report.html"

# 3. The review: edit the `action` column of a copy of flagged_samples.csv (in a
#    spreadsheet, say): `remove` (the default), `keep`, or `relabel:<class>`
#    (a bare `relabel` takes the row's suggested_label). Here, scripted: relabel the
#    flags the model is sure of, remove the rest.
python -c 'import sys, pandas as pd
review = pd.read_csv(sys.argv[1], dtype=str, keep_default_na=False)
sure = review["predicted_prob"].astype(float) >= 0.9
review.loc[sure, "action"] = "relabel"
review.to_csv(sys.argv[2], index=False)
print(f"review: relabel {int(sure.sum())}, remove {int((~sure).sum())}")' \
  "$work/run/flagged_samples.csv" "$work/reviewed.csv"

# 4. The final dataset: unflagged images, plus the flagged ones as the review says,
#    in $work/final/cleaned/<class>/ (apply_log.csv says what happened to each flag).
labelclean apply "$work/run" --review "$work/reviewed.csv" --out "$work/final"

# Also: `labelclean run ... --resume` continues a killed run; `labelclean report RUN`
# rebuilds a run's report; `labelclean bench` scores the cleaning on data whose labels
# you trust (examples/bench.py).
