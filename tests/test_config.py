"""One configuration: :class:`~labelclean.settings.Settings` declares every setting once;
the command line's options and :class:`Cleaner`'s keywords are its fields, with the same
names, defaults and choices, and every setting is checked before any data is read."""

from __future__ import annotations

import dataclasses
import inspect
import json
from pathlib import Path
from typing import get_args

import click
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from labelclean import Cleaner, LabelcleanError
from labelclean.cli import bench_command, main, run
from labelclean.decision import SCORES, SUSPICIONS
from labelclean.resume import FREE_SETTINGS
from labelclean.settings import DEFAULTS, LOSS_PASSES, SPECS, VERDICT_RULES, Settings
from labelclean.sources import SourceKind
from labelclean.training import AUGMENTATIONS

SIGNATURE = {name: p for name, p in inspect.signature(Cleaner.__init__).parameters.items()
             if name != "self"}
#: Settings for Python objects only: a DataFrame's root, a Hugging Face dataset's
#: image column; the command line shows progress when stderr is a terminal.
PYTHON_ONLY = {"root", "image_column", "progress"}
#: ``run``'s own options: where the output goes and how, not how to clean.
RUN_ONLY = {"data", "out", "val", "link", "overwrite", "nproc", "resume"}
CHOICES = {"score": SCORES, "suspicion": SUSPICIONS, "augment": ("auto", *AUGMENTATIONS),
           "kind": get_args(SourceKind), "loss_pass": LOSS_PASSES, "verdict": VERDICT_RULES}


def cli_default(param: click.Parameter):
    """The value ``Cleaner`` receives when the option is left out."""
    if isinstance(param, click.Option) and param.is_flag and param.default in (
            None, False) or getattr(param.default, "name", None) == "UNSET":
        return None if param.default is None else False
    return param.default


def settings_of(command: click.Command) -> dict[str, click.Parameter]:
    return {p.name: p for p in command.params if p.name in SIGNATURE}


@pytest.mark.parametrize("command", [run, bench_command], ids=["run", "bench"])
def test_every_setting_is_an_option_of_the_same_name(command):
    options = settings_of(command)
    assert set(SIGNATURE) - PYTHON_ONLY == set(options)


def test_the_options_defaults_are_the_cleaners():
    drift = {name: (cli_default(p), SIGNATURE[name].default)
             for name, p in settings_of(run).items()
             if cli_default(p) != SIGNATURE[name].default}
    assert drift == {}, "CLI default vs Cleaner default"


def test_the_options_choices_are_the_cleaners():
    options = settings_of(run)
    for name, choices in CHOICES.items():
        assert tuple(options[name].type.choices) == tuple(choices), name
        assert SIGNATURE[name].default in choices
    # and nothing else is a choice the Cleaner does not know about
    assert {n for n, p in options.items() if isinstance(p.type, click.Choice)} == set(CHOICES)


def same(a, b) -> bool:
    """Equal and of the same type (``False`` is not ``0``, nor ``None``)."""
    return type(a) is type(b) and a == b


def test_the_cleaners_keywords_are_the_settings_fields_in_order_with_their_defaults():
    assert list(SIGNATURE) == [f.name for f in dataclasses.fields(Settings)]
    drift = {name: (p.default, getattr(DEFAULTS, name)) for name, p in SIGNATURE.items()
             if not same(p.default, getattr(DEFAULTS, name))}
    assert drift == {}, "Cleaner default vs Settings default"
    assert SIGNATURE["model"].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    assert {p.kind for n, p in SIGNATURE.items() if n != "model"} == {
        inspect.Parameter.KEYWORD_ONLY}


@pytest.mark.parametrize("command", [run, bench_command], ids=["run", "bench"])
def test_the_options_are_the_settings_fields_one_to_one(command):
    options = settings_of(command)
    # every field with an option has exactly one, in field order; the others are
    # the settings of Python objects only
    assert list(options) == [n for n, s in SPECS.items() if s.option is not None]
    assert {n for n, s in SPECS.items() if s.option is None} == PYTHON_ONLY
    for name, param in options.items():
        spec = SPECS[name]
        assert same(cli_default(param), getattr(DEFAULTS, name)), name
        assert param.help == spec.help, name
        assert tuple(param.opts) == (f"--{name.replace('_', '-')}", *spec.aliases), name
        if spec.option == "choice":
            assert tuple(param.type.choices) == spec.choices == tuple(CHOICES[name]), name
        else:
            assert not isinstance(param.type, click.Choice), name
        assert param.is_flag == (spec.option in ("flag", "switch")), name


def test_the_settings_are_frozen_and_the_cleaner_hands_them_on():
    assert Cleaner().settings() == DEFAULTS
    settings = Cleaner("mlp:8", window=2, cache=Path("c")).settings()
    assert (settings.model, settings.window, settings.cache) == ("mlp:8", 2, "c")
    assert dataclasses.asdict(settings) == Cleaner("mlp:8", window=2, cache="c").get_params()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.window = 3  # type: ignore[misc]


def test_resume_may_change_only_the_settings_declared_free():
    # the settings that change no number of the run
    assert FREE_SETTINGS == {"progress", "tensorboard_dir", "cache", "max_memory", "workers"}
    assert FREE_SETTINGS == {n for n, s in SPECS.items() if s.free}


def test_the_canonical_option_names_are_the_keywords():
    for name, param in settings_of(run).items():
        assert f"--{name.replace('_', '-')}" in param.opts, param.opts


# One row per option: the arguments and the value Cleaner must receive.
def reach_table(tmp: Path) -> dict[str, tuple[list[str], object]]:
    return {
        "model": (["--model", "resnet18"], "resnet18"),  # pretrained needs a timm model
        "pretrained": (["--pretrained"], True),
        "weights": (["--weights", str(tmp / "w.pth")], str(tmp / "w.pth")),
        "max_epochs": (["--max-epochs", "7"], 7),
        "patience": (["--patience", "2"], 2),
        "min_steps": (["--min-steps", "11"], 11),
        "patience_steps": (["--patience-steps", "12"], 12),
        "lr": (["--lr", "0.3"], 0.3),
        "momentum": (["--momentum", "0.5"], 0.5),
        "weight_decay": (["--weight-decay", "0.001"], 0.001),
        "batch_size": (["--batch-size", "16"], 16),
        "augment": (["--augment", "shift"], "shift"),
        "score": (["--score", "expected_f1"], "expected_f1"),
        "suspicion": (["--suspicion", "loss"], "loss"),
        "window": (["--window", "2"], 2),
        "loss_pass": (["--loss-pass", "train"], "train"),
        "seed": (["--seed", "4"], 4),
        "device": (["--device", "cpu"], "cpu"),
        "amp": (["--amp"], True),
        "kind": (["--kind", "folder"], "folder"),
        "path_column": (["--path-column", "p"], "p"),
        "label_column": (["--label-column", "l"], "l"),
        "noise_column": (["--noise-column", "n"], "n"),
        "image_size": (["--image-size", "20"], 20),
        "cache": (["--cache", str(tmp / "cache")], str(tmp / "cache")),
        "max_memory": (["--max-memory", "1"], 2**30),
        "workers": (["--workers", "2"], 2),
        "compile": (["--compile"], True),
        "skip_unreadable": (["--skip-unreadable"], True),
        "probe_every": (["--probe-every", "3"], 3),
        "probe_batches": (["--probe-batches", "5"], 5),
        "spectrum": (["--spectrum"], True),
        "force_flags": (["--force-flags"], True),
        "canaries": (["--canaries", "0.1"], "0.1"),
        "verdict": (["--verdict", "estimate"], "estimate"),
        "embeddings": (["--no-embeddings"], False),
        "tensorboard_dir": (["--tensorboard-dir", str(tmp / "tb")], str(tmp / "tb")),
    }


def test_every_option_reaches_the_setting_of_its_name(tmp_path, monkeypatch):
    table = reach_table(tmp_path)
    assert set(table) == set(settings_of(run)), "a new option needs its row here"
    seen: list[dict] = []

    def fit(self, *_a, **_k):
        seen.append(self.get_params())
        raise LabelcleanError("stopped before reading data")

    monkeypatch.setattr(Cleaner, "fit", fit)
    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "w.pth").write_bytes(b"")  # it must exist; what it holds is read at fit
    args = [a for argv, _ in table.values() for a in argv]
    r = CliRunner().invoke(main, ["run", str(data), "--out", str(tmp_path / "out"), *args])
    assert r.exit_code == 2 and "stopped before reading data" in r.output, r.output
    params = seen[-1]
    for name, (_, expected) in table.items():
        got = params[name]
        assert (str(got) if isinstance(got, Path) else got) == expected, name
    assert not (tmp_path / "out").exists()


def test_epochs_is_an_alias_of_max_epochs(tmp_path, monkeypatch):
    seen: list[dict] = []

    def fit(self, *_a, **_k):
        seen.append(self.get_params())
        raise LabelcleanError("stop")

    monkeypatch.setattr(Cleaner, "fit", fit)
    (tmp_path / "data").mkdir()
    r = CliRunner().invoke(main, ["run", str(tmp_path / "data"), "--out", str(tmp_path / "o"),
                                  "--epochs", "9"])
    assert r.exit_code == 2 and seen[-1]["max_epochs"] == 9, r.output


def test_run_json_records_every_setting_by_its_name(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 80)
    table = pd.DataFrame(rng.normal(0, 1, (80, 4)) + y[:, None] * 3,
                         columns=["a", "b", "c", "d"])
    table["label"] = y
    table.to_csv(tmp_path / "f.csv", index=False)
    r = CliRunner().invoke(main, ["run", str(tmp_path / "f.csv"), "--out", str(tmp_path / "o"),
                                  "--model", "mlp:8", "--epochs", "2", "--min-steps", "0",
                                  "--probe-every", "0", "--window", "2"])
    assert r.exit_code in (0, 3), r.output
    params = json.loads((tmp_path / "o" / "run.json").read_text())["params"]
    assert set(SIGNATURE) <= set(params)
    assert params["max_epochs"] == 2 and params["window"] == 2 and params["model"] == "mlp:8"


BAD = [
    ({"score": "x"}, "score must be one of"),
    ({"suspicion": "aumm"}, "suspicion must be one of"),
    ({"loss_pass": "both"}, "loss_pass"),
    ({"augment": "rotate"}, "augment"),
    ({"kind": "parquet"}, "kind"),
    ({"window": 0}, "window"),
    ({"window": "3"}, "window"),
    ({"patience": 0}, "patience"),
    ({"min_steps": -1}, "min_steps"),
    ({"batch_size": 0}, "batch_size"),
    ({"max_epochs": "many"}, "max_epochs"),
    ({"workers": "many"}, "workers"),
    ({"probe_every": -1}, "probe_every"),
    ({"probe_batches": 0}, "probe_batches"),
    ({"image_size": 0}, "image_size"),
    ({"max_memory": -5}, "max_memory"),
    ({"lr": -0.1}, "lr"),
    ({"lr": float("nan")}, "lr"),
    ({"momentum": 1.5}, "momentum"),
    ({"weight_decay": -1}, "weight_decay"),
    ({"device": "tpu:what"}, "device"),
    ({"progress": "sometimes"}, "progress"),
    ({"weights": "/no/such/weights.pth"}, "weights file /no/such/weights.pth does not exist"),
    ({"model": "mlp", "pretrained": True}, "need a timm model"),
]


@pytest.mark.parametrize("bad,message", BAD, ids=[next(iter(b)) for b, _ in BAD])
def test_a_bad_setting_is_refused_before_any_data_is_read(bad, message, tmp_path):
    # the input does not exist: reading it would be a different error
    with pytest.raises(LabelcleanError, match=message):
        Cleaner(**bad).fit(tmp_path / "missing")


def test_a_bad_setting_on_the_command_line_is_one_line_before_out_is_touched(tmp_path):
    r = CliRunner().invoke(main, ["run", str(tmp_path / "missing"), "--out",
                                  str(tmp_path / "o"), "--window", "0"])
    assert r.exit_code == 2
    assert r.output.strip() == "labelclean: error: window must be an integer >= 1, got 0"
    assert not (tmp_path / "o").exists()
