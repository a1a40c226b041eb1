"""End to end on small synthetic data: the decision, the exports, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from conftest import FAST, synthetic_images, tree_digest, write_folder

from labelclean import Cleaner, Dataset, load_checkpoint, load_dataset
from labelclean.cli import main
from labelclean.rundir import MARKER


@pytest.fixture(scope="module")
def result(noisy_folder):
    root, _ = noisy_folder
    return Cleaner(**FAST).fit(root)


def test_flags_find_the_wrong_labels(result, noisy_folder):
    _, truth = noisy_folder
    flagged = set(result.flagged["sample_id"])
    wrong = {p for p, w in truth.items() if w}
    tp = len(flagged & wrong)
    assert tp / len(flagged) > 0.85 and tp / len(wrong) > 0.85
    assert result.mixture.bimodal
    assert 1 <= result.t_c <= result.timing["epochs_trained"]
    assert result.losses.shape == (result.timing["epochs_trained"], 360)
    assert result.losses.dtype == np.float32


def test_history_has_one_row_per_epoch_with_the_mixture(result):
    h = result.history
    assert list(h["epoch"]) == list(range(1, len(h) + 1))
    for col in ("train_loss", "train_accuracy", "m_c", "m_w", "s_c", "s_w", "r", "delta_L",
                "n_flagged", "seconds_train", "seconds_observe"):
        assert col in h and h[col].notna().all(), col
    np.testing.assert_allclose(h["delta_L"], h["m_w"] - h["m_c"], rtol=1e-9)
    # the flags at t_c are the would-be flags recorded for that epoch
    assert h.loc[h.epoch == result.t_c, "n_flagged"].item() == result.n_flagged


def test_timing_splits_observation_into_its_parts(result):
    h, timing = result.history, result.timing
    np.testing.assert_allclose(
        h["seconds_observe"], h["seconds_eval"] + h["seconds_decide"] + h["seconds_observers"])
    parts = timing["observe_seconds_by_part"]
    assert parts["eval_pass"] == pytest.approx(h["seconds_eval"].sum())
    assert parts["decision"] == pytest.approx(h["seconds_decide"].sum())
    observers = {k: v for k, v in parts.items() if k.startswith("observer:")}
    assert "observer:samples" in observers and all(v >= 0 for v in observers.values())
    # the observers' own clocks sit inside the loop's clock around them
    assert sum(observers.values()) <= h["seconds_observers"].sum() + 1e-6
    assert timing["observe_share"] == pytest.approx(
        timing["observe_seconds"] / timing["train_seconds"])
    upto = h[h["epoch"] <= result.t_c]
    assert timing["seconds_to_t_c"] == pytest.approx(
        (upto["seconds_train"] + upto["seconds_observe"]).sum())


def test_flagged_sorted_by_suspicion(result):
    # the default suspicion: minus the area under the margin, flagged when AUM < 0
    assert result.params["suspicion"] == "aum"
    f = result.flagged
    assert f["score"].is_monotonic_decreasing
    assert (f["score"] > 0).all()
    assert f["reason"].str.contains("mean margin .* < 0", regex=True).all()
    rest = result.scores[~result.scores["flagged"]]
    assert (rest["score"] <= 0).all()


def test_loss_suspicion_flags_above_l_c(noisy_folder):
    root, truth = noisy_folder
    res = Cleaner(**{**FAST, "suspicion": "loss"}).fit(root)
    f = res.flagged
    assert f["score"].is_monotonic_decreasing
    assert (f["score"] > res.mixture.threshold).all()
    assert f["reason"].str.contains("l_c").all()
    wrong = {p for p, w in truth.items() if w}
    assert len(set(f["sample_id"]) & wrong) / len(wrong) > 0.8


def test_same_seed_same_result(noisy_folder, result):
    root, _ = noisy_folder
    again = Cleaner(**FAST).fit(root)
    assert again.t_c == result.t_c
    np.testing.assert_array_equal(again.losses, result.losses)
    assert list(again.flagged["sample_id"]) == list(result.flagged["sample_id"])


def test_export_layout_and_input_untouched(result, noisy_folder, tmp_path):
    root, _ = noisy_folder
    before = tree_digest(root)
    out = result.export(tmp_path / "out")
    assert tree_digest(root) == before
    for name in ("flagged_samples.csv", "scores.csv", "metrics.csv", "losses.npy",
                 "margins.npy", "run.json", "checkpoint/model.safetensors",
                 "checkpoint/model.json", "report.html"):
        assert (out / name).is_file(), name
    kept = {p.relative_to(out / "cleaned").as_posix() for p in (out / "cleaned").rglob("*.png")}
    flagged = set(result.flagged["sample_id"])
    assert kept == set(result.dataset.ids) - flagged
    # copies by default (issue 14): same bytes, not the input's inodes, so an
    # edit under cleaned/ cannot reach the input
    some = next(iter(kept))
    assert (out / "cleaned" / some).stat().st_ino != (root / some).stat().st_ino
    assert (out / "cleaned" / some).read_bytes() == (root / some).read_bytes()
    review = pd.read_csv(out / "flagged_samples.csv")
    assert list(review.columns[:4]) == ["rank", "path", "index", "given_label"]
    assert {"predicted_label", "predicted_prob", "loss", "p_noisy", "action"} <= set(review)
    assert (review["action"] == "remove").all() and len(review) == result.n_flagged
    run = json.loads((out / "run.json").read_text())
    assert run["t_c"] == result.t_c and run["flagged"] == result.n_flagged
    assert run["samples"] == 360 and run["environment"]["torch"] == torch.__version__
    assert np.load(out / "losses.npy").shape == result.losses.shape
    assert [p.name for p in out.glob(".*")] == [MARKER], "temporary files left behind"
    assert not list(out.parent.glob(".*")), "staging folder left behind"


def test_export_refuses_nonempty_out_and_overlap(result, noisy_folder, tmp_path):
    from labelclean.errors import LabelcleanError

    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("keep me")
    with pytest.raises(LabelcleanError, match="not empty"):
        result.export(tmp_path / "busy")
    with pytest.raises(LabelcleanError, match="holds no labelclean run"):
        result.export(tmp_path / "busy", overwrite=True)
    assert (tmp_path / "busy" / "mine.txt").read_text() == "keep me"
    root, _ = noisy_folder
    with pytest.raises(LabelcleanError, match="overlaps the input"):
        result.export(root / "cleaned_here")


def test_checkpoint_round_trip(result, tmp_path):
    out = result.export(tmp_path / "o", report=False) if False else result.export(tmp_path / "o")
    ck = load_checkpoint(out)
    assert ck.classes == result.dataset.classes
    probs = ck.predict_proba(result.dataset.x)
    pred = np.asarray(ck.classes)[probs.argmax(1)]
    scores = result.scores.sort_values("index")
    assert (pred == scores["predicted_label"].to_numpy()).all()


def test_a_clean_dataset_is_left_nearly_untouched(clean_folder):
    res = Cleaner(**FAST).fit(clean_folder)
    assert res.estimated_noise_rate < 0.02


def test_csv_inputs_export_a_cleaned_csv(tmp_path):
    x, _, given, mask = synthetic_images(300, 3, 0.2, seed=4)
    rel = write_folder(tmp_path / "imgs", x, given)
    pd.DataFrame({"path": [f"imgs/{r}" for r in rel], "label": given, "extra": range(300)}).to_csv(
        tmp_path / "list.csv", index=False
    )
    res = Cleaner(**FAST).fit(tmp_path / "list.csv", noise_mask=mask)
    out = res.export(tmp_path / "out")
    cleaned = pd.read_csv(out / "cleaned.csv")
    assert len(cleaned) == 300 - res.n_flagged and "extra" in cleaned
    # paths were rewritten relative to the cleaned CSV and still resolve
    assert all((out / p).resolve().is_file() for p in cleaned["path"])
    run = json.loads((out / "run.json").read_text())
    assert run["against_truth"]["f1"] > 0.8

    feats = pd.DataFrame(x.reshape(300, -1).astype(float) / 255.0)
    feats.columns = [f"f{i}" for i in range(feats.shape[1])]
    feats["label"] = given
    feats.to_csv(tmp_path / "feats.csv", index=False)
    res = Cleaner(**FAST).fit(tmp_path / "feats.csv", noise_mask=mask)
    out = res.export(tmp_path / "out_f")
    assert len(pd.read_csv(out / "cleaned.csv")) == 300 - res.n_flagged
    flagged = set(res.flagged["index"])
    assert len(flagged & set(np.flatnonzero(mask))) / max(1, len(flagged)) > 0.8


def test_validation_accuracy_and_timm_model(noisy_folder, tmp_path):
    root, _ = noisy_folder
    x, y, _, _ = synthetic_images(60, 3, 0.0, seed=9)
    write_folder(tmp_path / "val", x, y)
    res = Cleaner(model="test_resnet", max_epochs=2, patience=1, batch_size=64,
                  probe_every=0).fit(root, val=tmp_path / "val")
    assert res.history["val_accuracy"].between(0, 1).all()
    assert res.params["model"] == "test_resnet"


def test_cli_run_end_to_end(noisy_folder, tmp_path):
    root, _ = noisy_folder
    before = tree_digest(root)
    out = tmp_path / "cli_out"
    args = ["run", str(root), "--out", str(out), "--model", "mlp:64", "--epochs", "12",
            "--patience", "4", "--lr", "0.05", "--batch-size", "32", "--probe-every", "0",
            "--min-steps", "100"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "flagged" in r.output and "t_c" in r.output
    assert (out / "flagged_samples.csv").is_file()
    assert tree_digest(root) == before
    # a second run into the same folder is refused, then allowed with --overwrite
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2 and "not empty" in r.output
    r = CliRunner().invoke(main, args + ["--overwrite"])
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "/nonexistent/data", "--out", "{tmp}/o"], "input not found"),
        (["run", "{tmp}/empty", "--out", "{tmp}/o"], "no class sub-folders"),
        (["run", "{tmp}/feats.csv", "--out", "{tmp}/o", "--label-column", "y"], "no label column"),
        (["run", "{tmp}/feats.csv", "--out", "{tmp}/o", "--model", "resnet18"], "needs images"),
        (["run", "{tmp}/feats.csv", "--out", "{tmp}/o", "--model", "nosuchnet"], "unknown model"),
    ],
    ids=["missing", "empty", "no-label", "timm-on-features", "unknown-model"],
)
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    pd.DataFrame({"a": np.arange(20.0), "label": [0, 1] * 10}).to_csv(
        tmp_path / "feats.csv", index=False
    )
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2, r.output
    assert message in r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1


def test_dataset_object_input_and_noise_mask_columns():
    x, _, given, mask = synthetic_images(240, 3, 0.25, seed=5)
    res = Cleaner(**FAST).fit(Dataset.from_arrays(x, given), noise_mask=mask)
    assert {"true_precision", "true_recall", "true_f1"} <= set(res.history)
    assert res.history["true_f1"].max() > 0.8


def test_loaded_dataset_reused_for_validation_shape_check(noisy_folder, tmp_path):
    root, _ = noisy_folder
    ds = load_dataset(root)
    from labelclean.errors import LabelcleanError

    bad_val = Dataset.from_arrays(np.zeros((4, 8, 8), np.uint8), np.array([0, 1, 2, 0]))
    with pytest.raises(LabelcleanError, match="validation inputs"):
        Cleaner(**FAST).fit(ds, val=bad_val)


def test_train_pass_losses_are_recorded_for_every_sample(noisy_folder):
    root, truth = noisy_folder
    res = Cleaner(**{**FAST, "loss_pass": "train"}).fit(root)
    assert np.isfinite(res.losses).all()
    flagged = set(res.flagged["sample_id"])
    wrong = {p for p, w in truth.items() if w}
    assert len(flagged & wrong) / max(1, len(flagged)) > 0.85
    assert len(flagged & wrong) / len(wrong) > 0.85


def test_trainer_folds_a_trailing_batch_of_one():
    from labelclean.models import create_model
    from labelclean.training import TrainConfig, Trainer

    x, _, y, _ = synthetic_images(65, 3, 0.0)
    xt = torch.from_numpy(x)[:, None]
    model = create_model("mlp:8", (1, 16, 16), 3, torch.zeros(1, 1, 1), torch.ones(1, 1, 1))
    t = Trainer(model, xt, y, TrainConfig(batch_size=32, max_epochs=1))
    stats = t.train_epoch(record=True)
    assert stats.steps == 2 and np.isfinite(stats.samples.loss).all()


def test_probe_interval_keeps_the_probe_within_budget():
    c = Cleaner()
    # 10,000 samples: 78 steps an epoch; a split probe of K=16 costs ~26 steps,
    # a budget of 5% of training allows one every 7th epoch (26 / 7 = 3.7 steps)
    assert c._probe_interval(10_000, 128) == 7
    assert c._probe_interval(100_000, 128) == 1
    assert Cleaner(probe_every=0)._probe_interval(10_000, 128) == 0
    assert Cleaner(probe_every="2")._probe_interval(10, 32) == 2
    from labelclean.errors import LabelcleanError

    with pytest.raises(LabelcleanError, match="probe_every"):
        Cleaner(probe_every="often")._probe_interval(10, 32)


def test_order_parameters_and_phases_land_in_history(noisy_folder):
    root, truth = noisy_folder
    ds = load_dataset(root)
    mask = np.array([truth[i] for i in ds.ids])
    res = Cleaner(**{**FAST, "probe_every": 1, "probe_batches": 4, "max_epochs": 5}).fit(
        ds, noise_mask=mask
    )
    h = res.history
    for col in ("A", "A_0", "R", "sigma_lambda2", "A_0c", "A_0w", "R_cw", "R_cw_true", "phase"):
        assert col in h, col
    assert h["A"].gt(0).all()
    # the mixture split and the true split agree on this easy data
    np.testing.assert_allclose(h["R_cw"], h["R_cw_true"], atol=0.2)
    assert set(h["phase"]) <= {"I", "II", "III", "IV", "unknown"}


def test_cli_run_with_the_aum_suspicion(noisy_folder, tmp_path):
    root, truth = noisy_folder
    out = tmp_path / "aum"
    args = ["run", str(root), "--out", str(out), "--model", "mlp:64", "--epochs", "12",
            "--patience", "4", "--lr", "0.02", "--batch-size", "32", "--probe-every", "0",
            "--suspicion", "aum", "--min-steps", "100"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    run = json.loads((out / "run.json").read_text())
    assert run["params"]["suspicion"] == "aum"
    flagged = set(pd.read_csv(out / "flagged_samples.csv")["path"])
    wrong = {p for p, w in truth.items() if w}
    assert len(flagged & wrong) / max(1, len(flagged)) > 0.85
    assert len(flagged & wrong) / len(wrong) > 0.85
    # flags were made, so run.json must say a second population was found
    # (for AUM that can come from the loss mixture, not the AUM mixture)
    assert run["second_population_found"] is True
    assert run["flagged"] == len(flagged)
