"""Per-class counts of the flagged samples, as tables."""

from __future__ import annotations

import pandas as pd

from .run import RunFiles


def class_table(run: RunFiles) -> pd.DataFrame:
    """Per given class: samples, flagged, flagged fraction and the commonest predictions
    among its flagged samples (``"7 (12), 1 (3)"``)."""
    s = run.scores
    classes = run.classes or sorted(s["given_label"].unique())
    samples = s["given_label"].value_counts()
    f = s[s["flagged"]]
    flagged = f["given_label"].value_counts()
    rows = []
    for c in classes:
        preds = f.loc[f["given_label"] == c, "predicted_label"].value_counts().head(3)
        rows.append({
            "class": c,
            "samples": int(samples.get(c, 0)),
            "flagged": int(flagged.get(c, 0)),
            "flagged_pct": 100.0 * flagged.get(c, 0) / max(1, samples.get(c, 0)),
            "flagged_predicted_as": ", ".join(f"{k} ({v})" for k, v in preds.items()),
        })
    return pd.DataFrame(rows)


def flagged_confusion(run: RunFiles) -> pd.DataFrame:
    """Counts of given (rows) -> predicted (columns) label among the flagged samples."""
    classes = run.classes or sorted(run.scores["given_label"].unique())
    f = run.flagged
    table = pd.crosstab(f["given_label"], f["predicted_label"])
    return table.reindex(index=classes, columns=classes, fill_value=0).fillna(0).astype(int)
