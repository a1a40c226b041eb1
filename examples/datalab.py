"""Hand a labelclean run to cleanlab's Datalab: label, outlier and near-duplicate issues.

labelclean writes the model's softmax probabilities at ``t_c``
(``pred_probs.npy``, ``(N, K)``) and its penultimate features
(``embeddings.npy``, ``(N, D)``), rows in sample order (``scores.csv``'s
``index``), columns in the order of ``run.json``'s ``class_to_idx``. That is
what cleanlab's maintainers advise bringing to Datalab for large image sets,
instead of cross-validating a model inside it:

    labelclean run data/ --out runs/first
    python examples/datalab.py runs/first

prints Datalab's issue summary and how many of labelclean's flags Datalab also
calls label issues. Needs cleanlab with its Datalab extra
(``pip install 'labelclean[bench]'``).

The probabilities are in-sample (the model at ``t_c`` was trained on these
samples, early-stopped before it memorised the wrong labels), not the
out-of-sample ones cleanlab's theory assumes; on noisy labels labelclean's
own flags and Datalab's label issues largely agree (tests/test_datalab.py).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from labelclean.export import EMBEDDINGS_FILE, PRED_PROBS_FILE, RUN_FILE, SCORES_FILE


def read_run(run_dir: str | Path) -> tuple[np.ndarray, np.ndarray | None, pd.DataFrame, list]:
    """``(pred_probs, embeddings or None, scores in sample order, classes)`` of a run."""
    run_dir = Path(run_dir)
    run = json.loads((run_dir / RUN_FILE).read_text())
    classes = sorted(run["input"]["class_to_idx"], key=run["input"]["class_to_idx"].get)
    pred_probs = np.load(run_dir / PRED_PROBS_FILE)
    embeddings_file = run_dir / EMBEDDINGS_FILE
    embeddings = np.load(embeddings_file) if embeddings_file.is_file() else None
    scores = pd.read_csv(run_dir / SCORES_FILE, dtype={"given_label": str},
                         keep_default_na=False).sort_values("index").reset_index(drop=True)
    return pred_probs, embeddings, scores, classes


def datalab_issues(run_dir: str | Path):
    """Run Datalab on a labelclean run; returns ``(lab, issues, scores)``.

    ``issues`` is Datalab's per-sample frame (``is_label_issue``,
    ``is_outlier_issue``, ``is_near_duplicate_issue``, ... ), one row per
    sample in the run's sample order, like ``scores``.
    """
    from cleanlab import Datalab

    pred_probs, embeddings, scores, classes = read_run(run_dir)
    index = {c: i for i, c in enumerate(classes)}
    labels = scores["given_label"].map(index).to_numpy()
    lab = Datalab(data={"label": labels}, label_name="label", verbosity=0)
    # features drive the outlier and near-duplicate checks; without them only
    # the pred_probs-based ones (label issues, ...) run
    lab.find_issues(pred_probs=pred_probs, features=embeddings)
    return lab, lab.get_issues(), scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a folder written by `labelclean run`")
    args = parser.parse_args()
    lab, issues, scores = datalab_issues(args.run_dir)
    print(lab.get_issue_summary().to_string(index=False))
    flagged = scores["flagged"].astype(str).str.lower().isin(["true", "1"]).to_numpy()
    label_issue = issues["is_label_issue"].to_numpy()
    both = int((flagged & label_issue).sum())
    print(f"\nlabelclean flagged {int(flagged.sum())}, Datalab found {int(label_issue.sum())} "
          f"label issues; {both} samples are in both")
    for kind in ("outlier", "near_duplicate"):
        column = f"is_{kind}_issue"
        if column in issues:
            ids = scores.loc[issues[column].to_numpy(), "sample_id"].head(5).tolist()
            print(f"{kind} issues: {int(issues[column].sum())} "
                  f"(first: {', '.join(map(str, ids))})")


if __name__ == "__main__":
    main()
