"""A run killed at any moment continues with ``--resume`` and ends as if never killed.

The runs are real ``labelclean run`` processes killed with SIGKILL. Where the
kill lands is made deterministic by a wrapper (below) that makes the process
announce, then sleep at, a chosen SGD step or a chosen moment of the export.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import synthetic_images, write_folder

from labelclean import Cleaner
from labelclean.errors import LabelcleanError
from labelclean.resume import STATE_FILE, load_state
from labelclean.rundir import MARKER, RESUME_DIR, read_marker, stale_siblings

ROOT = Path(__file__).resolve().parents[1]

# Hold the process at SGD step N ("step:N") or when the export writes the
# checkpoint ("export"), after announcing it in HOLD_FILE; count SGD steps into
# STEPS_FILE at exit.
WRAPPER = """
import atexit, os, sys, time
from pathlib import Path
import torch

hold_at = os.environ.get("HOLD_AT", "")
steps = [0]
atexit.register(lambda: Path(os.environ["STEPS_FILE"]).write_text(str(steps[0])))

def hold():
    Path(os.environ["HOLD_FILE"]).write_text("held")
    time.sleep(300)

original_step = torch.optim.SGD.step
def step(self, *args, **kwargs):
    steps[0] += 1
    if hold_at == f"step:{steps[0]}":
        hold()
    return original_step(self, *args, **kwargs)
torch.optim.SGD.step = step

if hold_at == "export":
    import labelclean.export
    original_save = labelclean.export.save_checkpoint
    def save_checkpoint(*args, **kwargs):
        hold()
    labelclean.export.save_checkpoint = save_checkpoint

from labelclean.cli import main
main(sys.argv[1:], prog_name="labelclean")
"""

# FAST (conftest) as options, probing every third epoch so that the probe's
# state is covered too: 12 steps an epoch on 360 samples (the last one of 8).
OPTIONS = ["--model", "mlp:64", "--max-epochs", "12", "--patience", "4", "--lr", "0.02",
           "--batch-size", "32", "--probe-every", "3", "--min-steps", "100",
           "--patience-steps", "0", "--seed", "0", "--noise-column", "noisy"]
STEPS_PER_EPOCH = 12
TIMINGS = ["seconds_train", "seconds_eval", "seconds_decide", "seconds_observers",
           "seconds_observe"]


@pytest.fixture(scope="module")
def noisy_csv(tmp_path_factory) -> Path:
    """A path CSV with a noise column, so the truth metrics are resumed too."""
    root = tmp_path_factory.mktemp("resume")
    x, _, given, mask = synthetic_images(360, 3, 0.2, seed=4)
    rel = write_folder(root / "images", x, given)
    table = pd.DataFrame({"path": ["images/" + r for r in rel], "label": given,
                          "noisy": mask.astype(int)})
    table.to_csv(root / "data.csv", index=False)
    return root / "data.csv"


def start(tmp: Path, data: Path, out: Path, *extra: str, hold: str = "") -> subprocess.Popen:
    script = tmp / "wrapper.py"
    script.write_text(WRAPPER)
    env = {**os.environ, "HOLD_AT": hold, "HOLD_FILE": str(tmp / "held"),
           "STEPS_FILE": str(tmp / f"steps-{out.name}"), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    (tmp / "held").unlink(missing_ok=True)
    return subprocess.Popen([sys.executable, str(script), "run", str(data), "--out", str(out),
                             *OPTIONS, *extra], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> str:
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    return stdout


def kill_when_held(proc: subprocess.Popen, tmp: Path) -> None:
    deadline = time.monotonic() + 300
    while not (tmp / "held").exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "the run never reached the hold point"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)


def steps_run(tmp: Path, out: Path) -> int:
    return int((tmp / f"steps-{out.name}").read_text())


def assert_same_run(a: Path, b: Path) -> None:
    pd.testing.assert_frame_equal(pd.read_csv(a / "flagged_samples.csv"),
                                  pd.read_csv(b / "flagged_samples.csv"))
    ma, mb = pd.read_csv(a / "metrics.csv"), pd.read_csv(b / "metrics.csv")
    pd.testing.assert_frame_equal(ma.drop(columns=TIMINGS), mb.drop(columns=TIMINGS))
    ra, rb = (pd.read_json(p / "run.json", typ="series") for p in (a, b))
    assert ra["t_c"] == rb["t_c"] and ra["stop_reason"] == rb["stop_reason"]
    assert np.array_equal(np.load(a / "losses.npy"), np.load(b / "losses.npy"))
    assert (a / "checkpoint" / "model.safetensors").read_bytes() == (
        b / "checkpoint" / "model.safetensors").read_bytes()


@pytest.fixture(scope="module")
def uninterrupted(noisy_csv, tmp_path_factory) -> tuple[Path, int]:
    tmp = tmp_path_factory.mktemp("whole")
    out = tmp / "whole"
    finish(start(tmp, noisy_csv, out))
    return out, steps_run(tmp, out)


def test_a_run_killed_mid_epoch_resumes_to_the_same_result(noisy_csv, uninterrupted, tmp_path):
    whole, whole_steps = uninterrupted
    out = tmp_path / "out"
    # step 65 is the 5th step of epoch 6: epochs 1-5 are saved, epoch 6 is half done
    proc = start(tmp_path, noisy_csv, out, hold=f"step:{5 * STEPS_PER_EPOCH + 5}")
    kill_when_held(proc, tmp_path)
    assert not out.exists()  # nothing visible until the run is complete
    [staging] = stale_siblings(out)
    assert load_state(staging / RESUME_DIR)["epoch"] == 5

    finish(start(tmp_path, noisy_csv, out, "--resume"))
    # it continued after epoch 5 rather than starting again
    # (the first epoch trains without the canaries, on fewer rows)
    first_five = int(pd.read_csv(whole / "metrics.csv")["steps"].iloc[:5].sum())
    assert steps_run(tmp_path, out) == whole_steps - first_five
    assert_same_run(whole, out)
    assert not (out / RESUME_DIR).exists() and stale_siblings(out) == []
    assert read_marker(out)["complete"]
    assert not any(name.startswith(RESUME_DIR) for name in read_marker(out)["files"])


def test_a_run_killed_during_export_resumes_without_training(noisy_csv, uninterrupted,
                                                            tmp_path):
    whole, _ = uninterrupted
    out = tmp_path / "out"
    proc = start(tmp_path, noisy_csv, out, hold="export")
    kill_when_held(proc, tmp_path)
    [staging] = stale_siblings(out)
    assert (staging / "flagged_samples.csv").exists()  # the export had begun
    assert load_state(staging / RESUME_DIR)["done"]

    # other options are refused in one line, and the saved state survives the refusal
    wrong = start(tmp_path, noisy_csv, out, "--resume", "--window", "2")
    _, stderr = wrong.communicate(timeout=300)
    assert wrong.returncode == 2
    assert stderr.strip().splitlines()[-1].startswith(
        "labelclean: error: cannot resume the run in"), stderr
    assert "window (3 then, 2 now)" in stderr
    [staging] = stale_siblings(out)
    assert load_state(staging / RESUME_DIR)["done"]

    finish(start(tmp_path, noisy_csv, out, "--resume"))
    assert steps_run(tmp_path, out) == 0
    assert_same_run(whole, out)
    assert stale_siblings(out) == [] and sorted(p.name for p in out.iterdir()) == sorted(
        p.name for p in whole.iterdir())


def test_a_killed_run_is_discarded_without_resume(noisy_csv, uninterrupted, tmp_path):
    whole, whole_steps = uninterrupted
    out = tmp_path / "out"
    kill_when_held(start(tmp_path, noisy_csv, out, hold="step:30"), tmp_path)
    finish(start(tmp_path, noisy_csv, out))
    assert steps_run(tmp_path, out) == whole_steps
    assert_same_run(whole, out)
    assert stale_siblings(out) == []


def test_resume_with_nothing_to_resume_starts_afresh(noisy_csv, uninterrupted, tmp_path):
    whole, whole_steps = uninterrupted
    out = tmp_path / "out"
    finish(start(tmp_path, noisy_csv, out, "--resume"))
    assert steps_run(tmp_path, out) == whole_steps
    assert_same_run(whole, out)
    assert (out / MARKER).is_file()


# ----------------------------------------------------------------------------- Python API

FAST = dict(model="mlp:16", max_epochs=3, patience=4, lr=0.02, batch_size=32, probe_every=0,
            min_steps=10, patience_steps=0, progress=False)


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("small") / "data"
    x, _, given, _ = synthetic_images(120, 3, 0.2, seed=5)
    write_folder(root, x, given)
    return root


def test_the_python_api_resumes_a_finished_state(small_folder, tmp_path):
    state = tmp_path / "state"
    first = Cleaner(**FAST).fit(small_folder, state_dir=state)
    saved = load_state(state)
    assert saved["epoch"] == len(first.history) and (state / STATE_FILE).is_file()
    again = Cleaner(**FAST).fit(small_folder, state_dir=state, resume=True)
    assert again.t_c == first.t_c
    pd.testing.assert_frame_equal(again.scores, first.scores)
    pd.testing.assert_frame_equal(again.history.drop(columns=TIMINGS),
                                  first.history.drop(columns=TIMINGS))
    # the observers' clocks come back with the state: no epoch ran, nothing was added
    assert (again.timing["observe_seconds_by_part"]
            == first.timing["observe_seconds_by_part"])


def test_resuming_with_other_settings_is_refused(small_folder, tmp_path):
    state = tmp_path / "state"
    Cleaner(**FAST).fit(small_folder, state_dir=state)
    with pytest.raises(LabelcleanError, match=r"other settings: lr \(0.02 then, 0.05 now\)"):
        Cleaner(**{**FAST, "lr": 0.05}).fit(small_folder, state_dir=state, resume=True)


def test_resume_needs_a_state_dir(small_folder):
    with pytest.raises(LabelcleanError, match="state_dir"):
        Cleaner(**FAST).fit(small_folder, resume=True)


def test_a_state_dir_inside_the_input_is_refused(small_folder):
    with pytest.raises(LabelcleanError, match="state_dir .* overlaps the input"):
        Cleaner(**FAST).fit(small_folder, state_dir=small_folder / "state")
    assert not (small_folder / "state").exists()


def test_a_damaged_state_is_one_clear_error(small_folder, tmp_path):
    state = tmp_path / "state"
    Cleaner(**FAST).fit(small_folder, state_dir=state)
    (state / STATE_FILE).write_bytes(b"not a state")
    with pytest.raises(LabelcleanError, match="cannot read the resume state"):
        Cleaner(**FAST).fit(small_folder, state_dir=state, resume=True)
