"""The Python API and the run folder around pred_probs / embeddings: review_frame,
one name per setting, progress, logging, TensorBoard."""

from __future__ import annotations

import io
import json
import logging
import os

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from conftest import FAST

from labelclean import Cleaner, LabelcleanError
from labelclean.cleaner import progress_enabled
from labelclean.cli import main
from labelclean.export import EMBEDDINGS_FILE, PRED_PROBS_FILE, REVIEW_FILE, unguard_cell
from labelclean.models import create_model
from labelclean.rundir import read_marker

FAST_CLI = ["--model", "mlp:64", "--max-epochs", "12", "--patience", "4", "--lr", "0.02",
            "--batch-size", "32", "--probe-every", "0", "--min-steps", "100",
            "--patience-steps", "0"]


@pytest.fixture(scope="module")
def exported(noisy_folder, tmp_path_factory):
    root, _ = noisy_folder
    result = Cleaner(**FAST).fit(root)
    out = tmp_path_factory.mktemp("api") / "run"
    result.export(out)
    return result, out


def test_review_frame_is_the_review_file(exported):
    result, out = exported
    frame = result.review_frame()
    on_disk = pd.read_csv(out / REVIEW_FILE, dtype=str, keep_default_na=False)
    assert list(frame.columns) == list(on_disk.columns)
    assert {"path", "suggested_label", "action"} <= set(frame.columns)
    assert len(frame) == result.n_flagged
    for column in ("path", "given_label", "suggested_label", "action", "reason"):
        assert frame[column].astype(str).tolist() == on_disk[column].map(unguard_cell).tolist()


def test_pred_probs_and_embeddings_are_run_files(exported):
    result, out = exported
    files = read_marker(out)["files"]
    assert PRED_PROBS_FILE in files and EMBEDDINGS_FILE in files  # in the manifest
    run = json.loads((out / "run.json").read_text())
    assert run["outputs"]["pred_probs"] == PRED_PROBS_FILE
    assert run["outputs"]["embeddings"] == EMBEDDINGS_FILE
    assert run["params"]["embeddings"] is True and run["params"]["max_epochs"] == 12
    assert np.load(out / PRED_PROBS_FILE).shape == (360, 3)


def test_cli_no_embeddings_and_tensorboard(noisy_folder, tmp_path):
    if not os.environ.get("CI"):  # CI installs .[dev], which has it
        pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root, _ = noisy_folder
    out, tb = tmp_path / "run", tmp_path / "tb"
    r = CliRunner().invoke(main, ["run", str(root), "--out", str(out), "--no-embeddings",
                                  "--tensorboard-dir", str(tb), *FAST_CLI])
    assert r.exit_code == 0, r.output
    assert (out / PRED_PROBS_FILE).is_file() and not (out / EMBEDDINGS_FILE).exists()
    run = json.loads((out / "run.json").read_text())
    assert run["outputs"]["embeddings"] is None
    # one name per setting: the CLI's --no-embeddings / --tensorboard-dir are run.json's
    assert run["params"]["embeddings"] is False and run["params"]["tensorboard_dir"] == str(tb)
    (events,) = [p.parent for p in tb.rglob("events.out.tfevents.*")]
    acc = EventAccumulator(str(events))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"loss/train_loss", "accuracy/eval_accuracy", "mixture/m_c", "mixture/separation",
            "decision/t_c"} <= tags
    assert len(acc.Scalars("loss/train_loss")) == run["timing"]["epochs_trained"]


def test_timm_embeddings_are_what_the_classifier_reads():
    model = create_model("regnetx_002", (1, 16, 16), 3, torch.zeros(1, 1, 1), torch.ones(1, 1, 1))
    model.eval()
    x = torch.randint(0, 255, (4, 1, 16, 16), dtype=torch.uint8)
    with torch.no_grad():
        features, logits = model.embed(x)
        np.testing.assert_allclose(logits, model(x), atol=1e-5)
    assert features.shape == (4, model.body.num_features)


def test_progress_auto_follows_the_terminal(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert progress_enabled("auto") is False
    monkeypatch.setattr("sys.stderr", Tty())
    assert progress_enabled("auto") is True
    assert progress_enabled(False) is False and Cleaner().progress == "auto"


def test_messages_go_through_logging(noisy_folder, caplog):
    root, _ = noisy_folder
    with caplog.at_level(logging.INFO, logger="labelclean"):
        Cleaner(**{**FAST, "max_epochs": 1, "min_steps": 0, "embeddings": False}).fit(root)
    assert any(r.name == "labelclean" and "read 360 samples of 3 classes" in r.getMessage()
               for r in caplog.records)


def test_tensorboard_dir_inside_the_input_is_refused(noisy_folder):
    root, _ = noisy_folder
    with pytest.raises(LabelcleanError, match="tensorboard_dir .* lies inside the input"):
        Cleaner(**FAST, tensorboard_dir=root / "tb").fit(root)
    assert not (root / "tb").exists()


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 8, 8)])
def test_small_cnn_takes_any_small_image_and_embeds(shape):
    model = create_model("cnn:8,16", shape, 4, torch.zeros(shape[0], 1, 1),
                         torch.ones(shape[0], 1, 1))
    model.eval()
    x = torch.randint(0, 255, (5, *shape), dtype=torch.uint8)
    with torch.no_grad():
        features, logits = model.embed(x)
        np.testing.assert_allclose(logits, model(x), atol=1e-5)
    assert features.shape == (5, 16) and logits.shape == (5, 4)


def test_colour_images_default_to_the_small_cnn_with_shift_flip():
    from labelclean.models import DEFAULT_RGB_AUGMENT, DEFAULT_RGB_MODEL, default_model

    assert default_model("images", (3, 32, 32)) == DEFAULT_RGB_MODEL
    assert default_model("images", (1, 28, 28)) != DEFAULT_RGB_MODEL
    cfg = Cleaner().train_config(1000, input_shape=(3, 32, 32), kind="images")
    assert cfg.augment == DEFAULT_RGB_AUGMENT
    assert Cleaner().train_config(1000, input_shape=(1, 28, 28)).augment == "none"
    assert Cleaner(augment="none").train_config(1000, input_shape=(3, 32, 32)).augment == "none"
    with pytest.raises(LabelcleanError, match="cnn"):
        create_model("cnn:0", (3, 32, 32), 4, torch.zeros(3, 1, 1), torch.ones(3, 1, 1))
