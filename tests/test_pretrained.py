"""Starting from pretrained weights (issue 25): a file of timm weights (``weights``),
loaded by timm's own loader, with a new head; the network sees inputs as it was
trained to (its pretrained mean, std and input size); a smaller default learning
rate; every problem with the file is one line.

``test_resnet`` is timm's smallest ResNet (0.5M parameters, pretrained at 160 px,
bilinear, mean and std 0.5); ``test_efficientnet`` stands for another architecture
(bicubic, ImageNet's mean and std). Neither is downloaded: the tests save their
randomly initialised weights, as a user saves a downloaded model's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from click.testing import CliRunner
from conftest import synthetic_images, write_folder

from labelclean import Cleaner, Dataset, LabelcleanError, load_checkpoint
from labelclean import cleaner as cleaner_mod
from labelclean.cli import main
from labelclean.models import create_model
from labelclean.settings import BASE_BATCH_SIZE, PRETRAINED_BASE_LR
from labelclean.synthetic import make_shapes

MODEL = "test_resnet"
#: Short runs: 40 images of 16 px, one epoch; flags forced so that a run too short
#: to convince still writes its outputs and exits 0.
SHORT = ["--epochs", "1", "--batch-size", "8", "--lr", "0.05", "--probe-every", "0",
         "--min-steps", "0", "--canaries", "0", "--verdict", "rules", "--force-flags",
         "--no-embeddings"]


def cli(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(r) -> str:
    """The run's error, checked to be one ``labelclean: error:`` line, exit 2."""
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("labelclean: error: "), r.output
    return lines[0]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """A file of ``test_resnet`` weights with a 5-class head, as ``torch.save`` wrote it."""
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("weights") / "test_resnet.pth"
    torch.save(timm.create_model(MODEL, num_classes=5).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def other_weights(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "test_efficientnet.pth"
    torch.save(timm.create_model("test_efficientnet", num_classes=5).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def shapes() -> Dataset:
    x, y, classes = make_shapes(n_per_class=8, num_classes=3, size=16, seed=0)
    return Dataset.from_arrays(x.transpose(0, 3, 1, 2), y, classes)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Single-channel images: timm adapts the first convolution of RGB weights."""
    root = tmp_path_factory.mktemp("grey") / "data"
    x, _, given, _ = synthetic_images(40, 2, 0.1, seed=3)
    write_folder(root, x, given)
    return root


# ---------------------------------------------------------------------- the model


@pytest.mark.filterwarnings("ignore::labelclean.WithheldWarning")
def test_the_file_starts_the_network_and_the_head_is_new(weights, shapes, monkeypatch):
    built = []

    def spy(*args, **kwargs):
        model = create_model(*args, **kwargs)
        built.append({k: v.clone() for k, v in model.body.state_dict().items()})
        return model

    monkeypatch.setattr(cleaner_mod, "create_model", spy)
    result = Cleaner(model=MODEL, weights=weights, max_epochs=1, batch_size=8, probe_every=0,
                     min_steps=0, canaries=0, verdict="rules", force_flags=True,
                     embeddings=False, progress=False).fit(shapes)
    saved = torch.load(weights, weights_only=True)
    start = built[0]
    body = [k for k in saved if not k.startswith("fc.")]
    assert body and all(torch.equal(start[k], saved[k]) for k in body)
    assert start["fc.weight"].shape == (3, saved["fc.weight"].shape[1])  # the data's classes
    # training moved the weights it started from
    assert not torch.equal(result.state_dict["body.conv1.0.weight"], saved["conv1.0.weight"])
    params = result.params
    assert params["pretrained"] is True and params["weights"] == str(weights)
    assert params["lr"] == pytest.approx(PRETRAINED_BASE_LR * 8 / BASE_BATCH_SIZE)
    assert params["model_input"] == {"mean": [127.5] * 3, "std": [127.5] * 3,
                                     "input_size": [160, 160], "interpolation": "bilinear"}


def test_the_inputs_are_normalised_and_resized_as_the_pretrained_config_says(other_weights):
    model = create_model("test_efficientnet", (3, 16, 16), 4, weights=other_weights)
    config = timm.data.resolve_data_config({}, model=model.body)
    assert config["interpolation"] == "bicubic" and config["input_size"] == (3, 160, 160)
    torch.testing.assert_close(model.mean.flatten(), torch.tensor(config["mean"]) * 255)
    torch.testing.assert_close(model.std.flatten(), torch.tensor(config["std"]) * 255)
    seen = []
    model.body.register_forward_pre_hook(lambda _m, inputs: seen.append(inputs[0]))
    x = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    assert model(x).shape == (2, 4)
    assert seen[0].shape == (2, 3, 160, 160)
    expected = torch.nn.functional.interpolate(
        (x.float() - model.mean) / model.std, size=(160, 160), mode="bicubic",
        align_corners=False)
    torch.testing.assert_close(seen[0], expected)
    # larger images are downsampled, antialiased
    model(torch.randint(0, 256, (1, 3, 200, 200), dtype=torch.uint8))
    assert seen[-1].shape == (1, 3, 160, 160)


def test_single_channel_images_take_the_channels_average(weights):
    model = create_model(MODEL, (1, 16, 16), 3, weights=weights)
    assert model.body.conv1[0].weight.shape[1] == 1  # timm adapted the first convolution
    assert model.mean.shape == (1, 1, 1) and float(model.mean) == pytest.approx(127.5)


def test_a_pretrained_run_fine_tunes_with_a_smaller_default_rate(weights):
    for batch in (32, 128):
        scratch = Cleaner(batch_size=batch).train_config(1000)
        tuned = Cleaner(model=MODEL, weights=weights, batch_size=batch).train_config(1000)
        assert tuned.lr == pytest.approx(PRETRAINED_BASE_LR * batch / BASE_BATCH_SIZE)
        assert tuned.lr < scratch.lr
    assert Cleaner(pretrained=True, lr=0.3).train_config(1000).lr == 0.3


# ---------------------------------------------------------------------- the command line


def test_run_with_weights_writes_its_outputs(folder, weights, tmp_path):
    out = tmp_path / "run"
    r = cli("run", folder, "--out", out, "--model", MODEL, "--weights", weights, *SHORT)
    assert r.exit_code == 0, r.output
    run = json.loads((out / "run.json").read_text())
    assert run["params"]["weights"] == str(weights) and run["params"]["pretrained"] is True
    assert run["params"]["model_input"]["input_size"] == [160, 160]
    assert "resized to 160×160" in (out / "report.html").read_text(encoding="utf-8")
    model = json.loads((out / "checkpoint" / "model.json").read_text())
    assert model["input_size"] == [160, 160] and model["interpolation"] == "bilinear"
    assert model["mean"] == [127.5]  # one channel: the pretrained channels' average
    # the checkpoint rebuilds the resizing model without the weights file nor the hub
    checkpoint = load_checkpoint(out)
    assert checkpoint.model.input_size == (160, 160)
    x = torch.as_tensor(np.zeros((2, 1, 16, 16), dtype=np.uint8))
    assert checkpoint.predict_proba(x).shape == (2, 2)


def test_a_missing_weights_file_is_one_line_before_out_is_touched(folder, tmp_path):
    r = cli("run", folder, "--out", tmp_path / "o", "--model", MODEL,
            "--weights", tmp_path / "nope.pth", *SHORT)
    assert "weights file" in one_line_error(r) and "does not exist" in r.output
    assert not (tmp_path / "o").exists()


def test_weights_of_another_architecture_are_one_line(folder, other_weights, tmp_path):
    r = cli("run", folder, "--out", tmp_path / "o", "--model", MODEL,
            "--weights", other_weights, *SHORT)
    assert f"do not fit model '{MODEL}'" in one_line_error(r)


def test_an_unreadable_weights_file_is_one_line(folder, tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint\n" * 10)
    r = cli("run", folder, "--out", tmp_path / "o", "--model", MODEL, "--weights", bad, *SHORT)
    assert "cannot read the weights" in one_line_error(r)


def test_a_file_that_lacks_some_tensors_is_one_line(weights, tmp_path):
    partial = tmp_path / "partial.pth"
    state = torch.load(weights, weights_only=True)
    torch.save({k: v for k, v in state.items() if not k.startswith("layer2.")}, partial)
    with pytest.raises(LabelcleanError, match="tensors are not in the file"):
        create_model(MODEL, (3, 16, 16), 3, weights=partial)


@pytest.mark.parametrize("model", ["mlp", "cnn:8,16"])
def test_weights_need_a_timm_model(folder, weights, tmp_path, model):
    r = cli("run", folder, "--out", tmp_path / "o", "--model", model, "--weights", weights,
            *SHORT)
    assert "need a timm model" in one_line_error(r)
    assert not (tmp_path / "o").exists()  # refused before any input was read


def test_weights_need_a_timm_model_when_the_default_model_is_not(shapes, weights):
    # colour images default to labelclean's own CNN
    with pytest.raises(LabelcleanError, match="need a timm model"):
        Cleaner(weights=weights, max_epochs=1, progress=False).fit(shapes)


def test_pretrained_offline_is_one_line_that_suggests_weights(folder, tmp_path, monkeypatch):
    from timm.models import _builder

    def offline(*_a, **_k):
        raise OSError("An error happened while trying to locate the file on the Hub.\nmore")

    monkeypatch.setattr(_builder, "load_pretrained", offline)
    r = cli("run", folder, "--out", tmp_path / "o", "--model", MODEL, "--pretrained", *SHORT)
    line = one_line_error(r)
    assert "cannot load timm's pretrained weights" in line and "--weights PATH" in line
