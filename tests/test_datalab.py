"""labelclean's outputs in cleanlab's Datalab: pred_probs.npy and embeddings.npy
from a small run give label, outlier and near-duplicate issues, and Datalab's
label issues overlap labelclean's flags on injected noise."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST, synthetic_images

from labelclean import Cleaner, Dataset

if not os.environ.get("CI"):  # CI installs .[dev], which has cleanlab and datasets
    pytest.importorskip("cleanlab")
    pytest.importorskip("datasets")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "datalab.py"


def _example():
    spec = importlib.util.spec_from_file_location("datalab_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run over 360 noisy images plus exact duplicates of the first 8 (same labels)."""
    x, _, given, mask = synthetic_images(360, 3, 0.2, seed=1)
    x = np.concatenate([x, x[:8]])
    given = np.concatenate([given, given[:8]])
    mask = np.concatenate([mask, mask[:8]])
    result = Cleaner(**FAST).fit(Dataset.from_arrays(x, given, noise_mask=mask))
    out = tmp_path_factory.mktemp("datalab") / "run"
    result.export(out)
    return out, result, mask


def test_outputs_on_disk_match_the_result(run_dir):
    out, result, _ = run_dir
    pred_probs, embeddings = np.load(out / "pred_probs.npy"), np.load(out / "embeddings.npy")
    assert pred_probs.shape == (368, 3) and pred_probs.dtype == np.float32
    assert embeddings.shape == (368, 64) and embeddings.dtype == np.float32  # mlp:64's hidden
    np.testing.assert_array_equal(pred_probs, result.pred_probs)
    np.testing.assert_allclose(pred_probs.sum(1), 1, atol=1e-5)
    # rows in sample order: the argmax is scores.csv's predicted label at t_c
    scores = result.scores.sort_values("index")
    classes = np.asarray(result.dataset.classes)
    assert (classes[pred_probs.argmax(1)] == scores["predicted_label"].to_numpy()).all()


def test_datalab_finds_label_outlier_and_near_duplicate_issues(run_dir):
    out, result, mask = run_dir
    lab, issues, scores = _example().datalab_issues(out)
    assert issues.shape[0] == 368
    for kind in ("label", "outlier", "near_duplicate"):
        assert f"is_{kind}_issue" in issues and f"{kind}_score" in issues
    summary = lab.get_issue_summary().set_index("issue_type")["num_issues"]
    assert summary["label"] > 0 and summary["outlier"] > 0
    # the duplicated images have identical embeddings: near duplicates
    near = issues["is_near_duplicate_issue"].to_numpy()
    assert near[:8].all() and near[360:].all()
    # labelclean's flags and Datalab's label issues agree on the injected noise
    flagged = scores["flagged"].to_numpy(dtype=bool)
    label_issue = issues["is_label_issue"].to_numpy()
    wrong = mask
    assert (flagged & wrong).sum() >= 0.8 * wrong.sum()
    assert (label_issue & wrong).sum() >= 0.5 * wrong.sum()
    both = flagged & label_issue
    assert both.sum() >= 0.5 * label_issue.sum()
    assert (both & wrong).sum() >= 0.8 * both.sum()
