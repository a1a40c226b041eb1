"""Issue 14, "users' data is sacred": one test (at least) per numbered defect,
the input-never-changes check, and runs killed at every stage.

Each test is named after the row of docs/reliability.md it backs. Runs are tiny
(48 images of 16x16, or a few hundred feature rows, an MLP, 3 epochs), so each
test takes a second or two. A "killed" run is a fork of the test process that
arms one stage (decoding, training, export, report, the swap) to SIGKILL
itself, then runs the ``labelclean run`` command: a real kill of a real
process, without paying for a fresh interpreter's imports.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from conftest import synthetic_images, tree_digest, write_folder
from PIL import Image

from labelclean import Cleaner, load_checkpoint
from labelclean.checkpoint import CONFIG, WEIGHTS, save_checkpoint
from labelclean.cli import main
from labelclean.errors import LabelcleanError
from labelclean.models import create_model
from labelclean.review import apply_review
from labelclean.rundir import MARKER, read_marker, stale_siblings
from labelclean.sources import load_dataset

# --min-steps 0, --verdict rules: these short runs are about the files, not the
# decision (48 samples carry too few canaries for the estimate to decide)
FAST = ["--model", "mlp:16", "--epochs", "3", "--patience", "1", "--lr", "0.05",
        "--batch-size", "16", "--probe-every", "0", "--suspicion", "loss", "--min-steps", "0",
        "--verdict", "rules"]


# ----------------------------------------------------------------------------- helpers


def cli(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


def run_args(data: Path, out: Path, *more) -> list[str]:
    return ["run", str(data), "--out", str(out), *FAST, *map(str, more)]


def file_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (links not followed), by relative path."""
    hashes = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            p = Path(dirpath) / name
            data = os.readlink(p).encode() if p.is_symlink() else p.read_bytes()
            hashes[p.relative_to(root).as_posix()] = hashlib.sha256(data).hexdigest()
    return hashes


def one_line_error(result) -> str:
    """The one error line of a refused command (after any progress bar), exit 2."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower()]
    assert errors == lines[-1:] and lines[-1].startswith("labelclean: error: "), result.output
    return lines[-1]


def copy_run(run: Path, dest: Path, marker: bool = True) -> Path:
    ignore = None if marker else shutil.ignore_patterns(MARKER)
    shutil.copytree(run, dest, symlinks=True, ignore=ignore)
    return dest


def assert_complete_run(out: Path) -> None:
    marker = read_marker(out)
    assert marker is not None and marker["complete"] and marker["kind"] == "run"
    assert (out / "run.json").is_file() and (out / "flagged_samples.csv").is_file()
    assert stale_siblings(out) == [], "a staging or old folder was left beside --out"


# Stages a killed run can die in: the function that SIGKILLs its own process.
def _die(*_a, **_k):
    os.kill(os.getpid(), signal.SIGKILL)


def _arm(stage: str) -> None:
    import labelclean.export
    import labelclean.report
    import labelclean.sources
    import labelclean.training

    if stage == "decoding":
        labelclean.sources._decode_all = _die
    elif stage == "training":
        labelclean.training.Trainer.train_epoch = _die
    elif stage == "export":  # after cleaned/ and the CSVs, before the arrays
        labelclean.export.write_npy = _die
    elif stage == "report":
        labelclean.report.render_html = _die
    elif stage == "swap":  # between moving the old run aside and moving the new one in
        import labelclean.rundir

        rename, calls = labelclean.rundir._rename, []

        def second_rename_dies(src, dst):
            calls.append(src)
            if len(calls) == 2:
                _die()
            rename(src, dst)

        labelclean.rundir._rename = second_rename_dies
    else:
        raise ValueError(stage)


def run_killed(stage: str, args: list[str], timeout: float = 60.0) -> None:
    """Run the CLI with ``args`` in a forked child that SIGKILLs itself at ``stage``."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            _arm(stage)
            main(args, standalone_mode=False)
        finally:
            os._exit(0)  # reached only if the stage was never hit
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"the run armed to die at {stage} hung")
        time.sleep(0.05)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (
        f"the run was meant to die at {stage} but exited ({status})"
    )


# ----------------------------------------------------------------------------- data


def make_folder(root: Path, n: int = 48, seed: int = 3) -> Path:
    x, _, given, _ = synthetic_images(n, 3, 0.2, seed=seed)
    write_folder(root, x, given)
    return root


def make_features(path: Path, classes: list[str], n: int = 240, seed: int = 0) -> Path:
    """Gaussian clusters, one per class, 15 % of labels wrong."""
    rng = np.random.default_rng(seed)
    k = len(classes)
    truth = np.arange(n) % k
    given = np.where(rng.random(n) < 0.15, (truth + rng.integers(1, k, n)) % k, truth)
    x = rng.normal(0, 3, (k, 6))[truth] + rng.normal(0, 1, (n, 6))
    table = pd.DataFrame(x, columns=[f"f{i}" for i in range(6)])
    table["label"] = [classes[g] for g in given]
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("reliability")


@pytest.fixture(scope="module")
def images(base) -> Path:
    return make_folder(base / "images")


@pytest.fixture(scope="module")
def features(base) -> Path:
    return make_features(base / "features" / "table.csv", ["a", "b", "c"])


@pytest.fixture(scope="module", autouse=True)
def inputs_never_change(images, features):
    """The shared inputs, byte for byte, after every test of this module."""
    before = (tree_digest(images), file_hashes(images), features.read_bytes())
    yield
    assert (tree_digest(images), file_hashes(images), features.read_bytes()) == before


@pytest.fixture(scope="module")
def previous(base, images) -> Path:
    """A complete run of ``images``, made once; tests work on copies."""
    out = base / "previous"
    r = cli(*run_args(images, out))
    assert r.exit_code == 0, r.output
    return out


# ----------------------------------------------------------------------------- 1


def test_overwrite_refuses_a_folder_with_a_hand_made_run_json(tmp_path, features):
    proj = tmp_path / "proj"
    (proj / "src").mkdir(parents=True)
    (proj / "src" / "code.py").write_text("print('mine')")
    (proj / "notes.txt").write_text("x")
    (proj / "run.json").write_text("{}")
    before = file_hashes(proj)
    line = one_line_error(cli(*run_args(features, proj, "--overwrite")))
    assert "holds no labelclean run" in line and "refusing to delete" in line
    assert file_hashes(proj) == before


def test_apply_overwrite_refuses_a_hand_made_apply_json(tmp_path, previous):
    out = tmp_path / "final"
    out.mkdir()
    (out / "apply.json").write_text("{}")
    (out / "keep.txt").write_text("mine")
    line = one_line_error(cli("apply", previous, "--out", out, "--overwrite"))
    assert "holds no labelclean output" in line
    assert sorted(p.name for p in out.iterdir()) == ["apply.json", "keep.txt"]


def test_overwrite_deletes_only_what_labelclean_wrote(tmp_path, previous, images):
    out = copy_run(previous, tmp_path / "out")
    (out / "my notes.txt").write_text("mine")
    (out / "mine" / "deep").mkdir(parents=True)
    (out / "mine" / "deep" / "a.txt").write_text("mine too")
    (out / "cleaned" / "extra.txt").write_text("added inside labelclean's tree")
    edited = (out / "flagged_samples.csv").read_text() + "\n# my edit\n"
    (out / "flagged_samples.csv").write_text(edited)  # edited in place, as docs allow
    r = cli(*run_args(images, out, "--overwrite"))
    assert r.exit_code == 0, r.output
    assert_complete_run(out)
    assert (out / "my notes.txt").read_text() == "mine"
    assert (out / "mine" / "deep" / "a.txt").read_text() == "mine too"
    assert (out / "cleaned" / "extra.txt").is_file()
    assert (out / "flagged_samples.previous.csv").read_text() == edited
    assert "# my edit" not in (out / "flagged_samples.csv").read_text()


def test_apply_overwrite_keeps_the_users_files(tmp_path, previous):
    out = tmp_path / "final"
    apply_review(previous, out)
    (out / "mine.txt").write_text("mine")
    apply_review(previous, out, overwrite=True)
    assert (out / "mine.txt").read_text() == "mine"
    assert read_marker(out)["kind"] == "apply"
    # a run folder is not an apply output, and the other way round
    with pytest.raises(LabelcleanError, match="not `labelclean apply`"):
        apply_review(previous, copy_run(previous, tmp_path / "a_run"), overwrite=True)


# ----------------------------------------------------------------------------- 2


def test_a_failed_overwrite_leaves_the_previous_run(tmp_path, previous, images, features):
    out = copy_run(previous, tmp_path / "out")
    before = tree_digest(out)
    (tmp_path / "empty").mkdir()
    one_line_error(cli(*run_args(tmp_path / "empty", out, "--overwrite")))  # bad input
    assert tree_digest(out) == before
    one_line_error(cli(*run_args(images, out, "--overwrite", "--val", tmp_path / "typo")))
    assert tree_digest(out) == before
    # a --val that exists but does not fit fails during loading, after the staging began
    one_line_error(cli(*run_args(images, out, "--overwrite", "--val", features)))
    assert tree_digest(out) == before
    assert stale_siblings(out) == []


# ----------------------------------------------------------------------------- 3


def test_editing_cleaned_never_reaches_the_input(tmp_path, images):
    before = file_hashes(images)
    out = tmp_path / "out"
    r = cli(*run_args(images, out))
    assert r.exit_code == 0, r.output
    for p in (out / "cleaned").rglob("*.png"):
        Image.open(p).rotate(90).save(p)
    assert file_hashes(images) == before
    # links stay available, but only when asked for
    linked = tmp_path / "linked"
    r = cli(*run_args(images, linked, "--link", "hardlink"))
    assert r.exit_code == 0, r.output
    rel = next((linked / "cleaned").rglob("*.png")).relative_to(linked / "cleaned")
    assert (linked / "cleaned" / rel).stat().st_ino == (images / rel).stat().st_ino


# ----------------------------------------------------------------------------- 4


@pytest.mark.parametrize("bad_id", ["../../elsewhere/secret.png", "/etc/hostname",
                                    "c0/../../elsewhere/secret.png", "c9/00001.png"])
def test_apply_refuses_sample_paths_outside_the_run(tmp_path, previous, images, bad_id):
    secret = images.parent.parent / "elsewhere" / "secret.png"
    secret.parent.mkdir(exist_ok=True)
    secret.write_bytes(b"secret")
    for marker in (False, True):
        run = copy_run(previous, tmp_path / f"run_{marker}", marker=marker)
        scores = pd.read_csv(run / "scores.csv", dtype=str, keep_default_na=False)
        kept = scores.index[scores["flagged"] == "False"][0]
        scores.loc[kept, "sample_id"] = bad_id
        scores.to_csv(run / "scores.csv", index=False)
        out = tmp_path / f"final_{marker}"
        # tampering with the manifest-checked file is caught by its checksum;
        # without a manifest the path itself is refused
        match = "checksum" if marker else "not a file of class"
        with pytest.raises(LabelcleanError, match=match):
            apply_review(run, out, link="hardlink")
        assert not out.exists()
    assert secret.stat().st_nlink == 1


# ----------------------------------------------------------------------------- 5


@pytest.mark.parametrize("stage", ["export", "report"])
def test_a_run_killed_while_writing_is_replaced_by_the_same_command(tmp_path, images, stage):
    out = tmp_path / "out"
    args = run_args(images, out, "--overwrite")
    run_killed(stage, args)
    assert not out.exists()  # nothing half-written is visible
    assert stale_siblings(out), "the killed run's staging folder should be there"
    r = cli(*args)
    assert r.exit_code == 0, r.output
    assert_complete_run(out)


# ----------------------------------------------------------------------------- 6


def test_a_full_disk_is_one_line_and_keeps_the_previous_run(tmp_path, previous, images,
                                                            monkeypatch):
    import labelclean.export

    def full(path, *_a):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(labelclean.export, "write_npy", full)
    out = copy_run(previous, tmp_path / "out")
    before = tree_digest(out)
    line = one_line_error(cli(*run_args(images, out, "--overwrite")))
    assert "No space left on device" in line
    assert tree_digest(out) == before and stale_siblings(out) == []


def test_a_read_only_out_fails_before_training(tmp_path, images, monkeypatch):
    ro = tmp_path / "ro"
    mkdir = Path.mkdir

    def read_only(self, *a, **k):
        if self == ro or ro in self.parents:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return mkdir(self, *a, **k)

    def no_training(*_a, **_k):
        raise AssertionError("training started before --out was known to be writable")

    monkeypatch.setattr(Path, "mkdir", read_only)
    monkeypatch.setattr(Cleaner, "fit", no_training)
    line = one_line_error(cli(*run_args(images, ro / "out")))
    assert "Read-only file system" in line


# ----------------------------------------------------------------------------- 7


def test_na_like_labels_in_a_path_csv_are_class_names(tmp_path):
    names = ["None", "NA", "null", "NaN", "n/a"]
    x, _, _, _ = synthetic_images(len(names) * 2, 1, 0.0)
    rows = []
    (tmp_path / "imgs").mkdir()
    for i, img in enumerate(x):
        Image.fromarray(img, "L").save(tmp_path / "imgs" / f"{i}.png")
        rows.append((f"imgs/{i}.png", names[i % len(names)]))
    csv = tmp_path / "labels.csv"
    pd.DataFrame(rows, columns=["path", "label"]).to_csv(csv, index=False)
    data = load_dataset(csv)
    assert sorted(data.classes) == sorted(names)
    # only a truly empty cell is missing
    csv.write_text(csv.read_text().replace(",NA\n", ",\n", 1))
    with pytest.raises(LabelcleanError, match="1 rows have no label"):
        load_dataset(csv)


# ----------------------------------------------------------------------------- 8


def test_formula_cells_are_neutralised_and_read_back(tmp_path):
    classes = ["-1", "=1+1", "@x", "+2"]
    data = make_features(tmp_path / "in" / "f.csv", classes, n=320)
    result = Cleaner(model="mlp:16", max_epochs=4, patience=2, suspicion="loss",
                     batch_size=32, probe_every=0, min_steps=0).fit(data)
    assert result.n_flagged > 0
    run = result.export(tmp_path / "run")
    raw = pd.read_csv(run / "flagged_samples.csv", dtype=str, keep_default_na=False)
    for column in ("given_label", "predicted_label", "suggested_label", "action", "reason"):
        cells = raw[column]
        assert not cells.str.match(r"^[=+\-@\t\r]").any(), column
    assert raw["given_label"].str.startswith("'").all()
    # apply reads its own guard back: a bare relabel takes the (guarded) suggestion
    raw.loc[0, "action"] = "relabel"
    raw.loc[1, "action"] = "relabel:-1"
    raw.loc[2, "action"] = "keep"
    raw.to_csv(tmp_path / "review.csv", index=False)
    apply_review(run, tmp_path / "final", review_csv=tmp_path / "review.csv")
    cleaned = pd.read_csv(tmp_path / "final" / "cleaned.csv", dtype=str, keep_default_na=False)
    assert set(cleaned["label"]) <= set(classes)
    log = pd.read_csv(tmp_path / "final" / "apply_log.csv", dtype=str, keep_default_na=False)
    assert not log["new_label"].str.match(r"^[=+\-@]").any()


# ----------------------------------------------------------------------------- 9


def _checkpoint(folder: Path) -> Path:
    shape, k = (4,), 3
    model = create_model("mlp:8", shape, k, torch.zeros(4), torch.ones(4))
    config = {"model": "mlp:8", "classes": ["a", "b", "c"], "input_shape": list(shape),
              "input_kind": "features", "mean": [0.0] * 4, "std": [1.0] * 4}
    return save_checkpoint(folder, model.state_dict(), config)


def _flip_last_byte(p: Path) -> None:
    data = bytearray(p.read_bytes())
    data[-1] ^= 0x10
    p.write_bytes(bytes(data))


def _edit_config(p: Path, **changes) -> None:
    config = json.loads(p.read_text())
    config.update(changes)
    p.write_text(json.dumps({k: v for k, v in config.items() if v is not None}))


DAMAGE = {
    "weights missing": lambda f: (f / WEIGHTS).unlink(),
    "config not JSON": lambda f: (f / CONFIG).write_text("{not json"),
    "weights truncated": lambda f: (f / WEIGHTS).write_bytes((f / WEIGHTS).read_bytes()[:40]),
    "a flipped byte": lambda f: _flip_last_byte(f / WEIGHTS),
    "config key missing": lambda f: _edit_config(f / CONFIG, model=None),
    "shape mismatch": lambda f: _edit_config(f / CONFIG, input_shape=[5], mean=[0.0] * 5,
                                             std=[1.0] * 5),
    "weights of another model": lambda f: (
        _checkpoint(f.parent / "other"),
        shutil.copy(f.parent / "other" / WEIGHTS, f / WEIGHTS),
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_checkpoint_is_one_clear_error(tmp_path, damage):
    folder = _checkpoint(tmp_path / "ck")
    load_checkpoint(folder)  # intact: loads
    DAMAGE[damage](folder)
    with pytest.raises(LabelcleanError) as e:
        load_checkpoint(folder)
    assert "\n" not in str(e.value)


def test_apply_on_a_corrupt_run_json_is_one_line(tmp_path, previous):
    run = copy_run(previous, tmp_path / "run")
    (run / "run.json").write_text('{"input": ')
    line = one_line_error(cli("apply", run, "--out", tmp_path / "final"))
    assert "run.json" in line


# ----------------------------------------------------------------------------- 10


def _path_csv_over(images: Path, lists: Path) -> Path:
    """``lists/l.csv`` listing the images of ``images`` as ``../…`` paths."""
    lists.mkdir()
    paths = sorted(images.rglob("*.png"))
    pd.DataFrame({"path": [os.path.relpath(p, lists) for p in paths],
                  "label": [p.parent.name for p in paths]}).to_csv(lists / "l.csv", index=False)
    return lists / "l.csv"


def test_out_inside_the_image_tree_of_a_path_csv_is_refused(tmp_path, images):
    csv = _path_csv_over(images, tmp_path / "lists")
    out = images / "figures"
    line = one_line_error(cli(*run_args(csv, out)))
    assert "overlaps the input" in line
    assert not out.exists()


def test_apply_out_inside_the_image_tree_of_a_path_csv_is_refused(tmp_path, images):
    csv = _path_csv_over(images, tmp_path / "lists")
    run = tmp_path / "run"
    assert cli(*run_args(csv, run)).exit_code == 0
    out = images / "c0" / "final"
    line = one_line_error(cli("apply", run, "--out", out))
    assert "overlaps the input" in line
    assert not out.exists()


# ----------------------------------------------------------------------------- 11


@pytest.mark.parametrize("marker", [True, False], ids=["with-manifest", "without-manifest"])
def test_report_refuses_a_truncated_scores_csv(tmp_path, previous, marker):
    run = copy_run(previous, tmp_path / "run", marker=marker)
    lines = (run / "scores.csv").read_text().splitlines(keepends=True)
    (run / "scores.csv").write_text("".join(lines[: len(lines) // 2]))
    line = one_line_error(cli("report", run))
    assert ("checksum" if marker else "rows but run.json says") in line


def test_report_refuses_a_flag_count_that_disagrees(tmp_path, previous):
    run = copy_run(previous, tmp_path / "run", marker=False)
    summary = json.loads((run / "run.json").read_text())
    summary["flagged"] += 5
    (run / "run.json").write_text(json.dumps(summary))
    assert "flags" in one_line_error(cli("report", run))


# ----------------------------------------------------------------------------- 12


def test_weights_have_the_mode_of_every_other_output(previous):
    mode = 0o666 & ~_umask()
    for name in ("checkpoint/model.safetensors", "checkpoint/model.json", "run.json",
                 "scores.csv"):
        assert (previous / name).stat().st_mode & 0o777 == mode, name


def test_a_failed_run_leaves_no_out_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "new" / "sub"
    one_line_error(cli(*run_args(tmp_path / "empty", out)))
    assert not (tmp_path / "new").exists()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ----------------------------------------------------------------------------- the input


def test_the_input_is_never_modified(tmp_path):
    data = make_folder(tmp_path / "data", seed=5)
    before, digest = file_hashes(data), tree_digest(data)
    out = tmp_path / "run"
    assert cli(*run_args(data, out)).exit_code == 0
    assert cli("apply", out, "--out", tmp_path / "final").exit_code == 0
    assert cli("report", out).exit_code == 0
    run_killed("export", run_args(data, out, "--overwrite"))
    for tree in (out / "cleaned", tmp_path / "final" / "cleaned"):
        for p in list(tree.rglob("*.png"))[:5]:
            Image.open(p).rotate(90).save(p)
    assert file_hashes(data) == before and tree_digest(data) == digest


# ----------------------------------------------------------------------------- kills


@pytest.mark.parametrize("stage", ["decoding", "training", "export", "report", "swap"])
def test_a_killed_overwrite_leaves_the_previous_run_or_a_replaceable_one(
    tmp_path, previous, images, stage
):
    out = copy_run(previous, tmp_path / "out")
    (out / "mine.txt").write_text("mine")
    before = tree_digest(out)
    args = run_args(images, out, "--overwrite")
    run_killed(stage, args)
    if stage == "swap":
        # killed between the two renames: the previous run waits beside --out
        assert not out.exists() and stale_siblings(out)
    else:
        assert tree_digest(out) == before
    r = cli(*args)
    assert r.exit_code == 0, r.output
    assert_complete_run(out)
    assert (out / "mine.txt").read_text() == "mine"


def test_an_interrupted_swap_is_undone_by_the_next_command(tmp_path, previous, images):
    out = copy_run(previous, tmp_path / "out")
    before = tree_digest(out)
    run_killed("swap", run_args(images, out, "--overwrite"))
    # Any later command on this --out first puts the previous run back, even
    # one that then fails on its own input.
    (tmp_path / "empty").mkdir()
    one_line_error(cli(*run_args(tmp_path / "empty", out, "--overwrite")))
    assert tree_digest(out) == before and stale_siblings(out) == []


# ----------------------------------------------------------------------------- demo and bench


def _small_digits(root: Path, noise: float, seed: int, size: int = 32) -> pd.DataFrame:
    """A stand-in for the demo's 1,797 digits: 48 images in the same layout."""
    x, y, given, mask = synthetic_images(48, 3, noise, seed=seed)
    rel = write_folder(root, x, given)
    return pd.DataFrame({"path": rel, "true_label": y, "given_label": given, "is_noisy": mask})


def test_demo_overwrite_refuses_a_hand_made_demo_json(tmp_path):
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "demo.json").write_text("{}")  # hand-made: not a demo
    (proj / "notes.txt").write_text("mine")
    line = one_line_error(cli("demo", "--out", proj, "--overwrite"))
    assert "holds no labelclean demo" in line
    assert sorted(p.name for p in proj.iterdir()) == ["demo.json", "notes.txt"]


def test_demo_overwrite_keeps_the_users_files(tmp_path, monkeypatch):
    import labelclean.demo

    monkeypatch.setattr(labelclean.demo, "write_digits_folder", _small_digits)
    fast = dict(model="mlp:16", max_epochs=3, patience=1, progress=False, min_steps=0)
    out = tmp_path / "demo"
    labelclean.demo.run_demo(out, echo=lambda _: None, **fast)
    (out / "notes.txt").write_text("mine")
    (out / "data" / "c0" / "mine.txt").write_text("mine too")
    labelclean.demo.run_demo(out, overwrite=True, echo=lambda _: None, **fast)
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "data" / "c0" / "mine.txt").read_text() == "mine too"
    assert read_marker(out)["complete"] and read_marker(out / "run")["complete"]


def test_bench_out_may_not_lie_in_the_data(images):
    from labelclean.bench import run_bench

    with pytest.raises(LabelcleanError, match="overlaps the input"):
        run_bench(images, out=images / "bench", seeds=[0], model="mlp:16", max_epochs=2)
    assert not (images / "bench").exists()


# ----------------------------------------------------------------------------- more catalogue rows


def test_ctrl_c_keeps_the_previous_run(tmp_path, previous, images, monkeypatch):
    import labelclean.training

    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(labelclean.training.Trainer, "train_epoch", interrupted)
    out = copy_run(previous, tmp_path / "out")
    before = tree_digest(out)
    r = cli(*run_args(images, out, "--overwrite"))
    assert r.exit_code == 130 and "labelclean: interrupted" in r.output
    assert tree_digest(out) == before and stale_siblings(out) == []


def test_apply_after_input_images_vanished_is_refused(tmp_path):
    data = make_folder(tmp_path / "data", seed=7)
    out = tmp_path / "run"
    assert cli(*run_args(data, out)).exit_code == 0
    kept = pd.read_csv(out / "scores.csv", dtype=str, keep_default_na=False)
    (data / kept.loc[kept["flagged"] == "False", "sample_id"].iloc[0]).unlink()
    line = one_line_error(cli("apply", out, "--out", tmp_path / "final"))
    assert "input images are gone since the run" in line
    assert not (tmp_path / "final").exists()


def test_a_checkpoint_without_a_checksum_still_loads(tmp_path):
    folder = _checkpoint(tmp_path / "ck")
    _edit_config(folder / CONFIG, weights_sha256=None)  # as written before issue 14
    assert load_checkpoint(folder).classes == ["a", "b", "c"]


# ============================================================================= issue 28
# "Users' data is sacred, second round": one test (at least) per defect.


def _python_cli(*args) -> list[str]:
    import sys

    return [sys.executable, "-m", "labelclean", *map(str, args)]


def _wait_for(predicate, timeout: float = 120.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.parametrize("first", ["plain", "overwrite"])
def test_two_runs_to_one_out_never_lose_a_complete_run(tmp_path, features, first):
    """Two `labelclean run` processes to one --out: the first (a real process,
    stopped while it holds --out) keeps it; the second fails at once in one line,
    with or without --overwrite, and never replaces the first's complete run."""
    import subprocess

    out = tmp_path / "out"
    flags = {"plain": [], "overwrite": ["--overwrite"]}
    second = "overwrite" if first == "plain" else "plain"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    a = subprocess.Popen(_python_cli(*run_args(features, out, *flags[first])), env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_for(lambda: any("stage" in p.name for p in stale_siblings(out))
                  or a.poll() is not None, what="the first run to open --out")
        a.send_signal(signal.SIGSTOP)  # it holds --out, stopped mid-run
        line = one_line_error(cli(*run_args(features, out, *flags[second])))
        assert "in use by another labelclean command" in line
        assert not out.exists()
    finally:
        a.send_signal(signal.SIGCONT)
        output = a.communicate(timeout=300)[0].decode()
    assert a.returncode == 0, output
    assert_complete_run(out)
    before = tree_digest(out)
    # Once the first has finished, the second without --overwrite is refused
    # (and with it, replaces the run the proper way).
    r = cli(*run_args(features, out, *flags[second]))
    if second == "plain":
        assert "pass --overwrite" in one_line_error(r)
        assert tree_digest(out) == before
    else:
        assert r.exit_code == 0, r.output
        assert_complete_run(out)


def test_commit_never_replaces_an_out_filled_meanwhile(tmp_path, previous):
    from labelclean import rundir

    out = tmp_path / "out"
    staging = rundir.begin(out, kind="run", overwrite=False)
    (staging.path / "run.json").write_text("{}")
    copy_run(previous, out)  # someone else's complete run appears meanwhile
    before = tree_digest(out)
    with pytest.raises(LabelcleanError, match="filled while this command ran"):
        with staging:
            staging.commit()
    assert tree_digest(out) == before and stale_siblings(out) == []
    # a hand-made folder appearing under an --overwrite run is not replaced either
    shutil.rmtree(out)
    staging = rundir.begin(out, kind="run", overwrite=True)
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(LabelcleanError, match="holds no labelclean run"):
        with staging:
            staging.commit()
    assert (out / "notes.txt").read_text() == "mine" and stale_siblings(out) == []


def test_a_held_out_is_refused_at_once_and_freed_by_a_kill(tmp_path):
    """The lock is the kernel's: a killed holder leaves nothing that blocks."""
    from labelclean import rundir

    out = tmp_path / "out"
    pid = os.fork()
    if pid == 0:
        try:
            rundir.begin(out, kind="run", overwrite=False)
            os.kill(os.getpid(), signal.SIGSTOP)
        finally:
            os._exit(0)
    _wait_for(lambda: os.waitpid(pid, os.WNOHANG | os.WUNTRACED)[0] == pid,
              what="the child to stop")
    held = rf"in use by another labelclean command \(pid {pid}\)"
    try:
        with pytest.raises(LabelcleanError, match=held):
            rundir.begin(out, kind="run", overwrite=False)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    staging = rundir.begin(out, kind="run", overwrite=False)  # the killed one's left-overs go
    staging.abort()
    assert stale_siblings(out) == [] and not out.exists()


def test_bench_out_never_overwrites_the_users_files(tmp_path, features):
    from labelclean.bench import run_bench

    fast = dict(seeds=[0], model="mlp:16", max_epochs=2, patience=1, min_steps=0,
                probe_every=0, progress=False)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "bench.csv").write_text("my own results\n")
    (mine / "flags_seed0.csv").write_text("mine too\n")
    before = tree_digest(mine)
    with pytest.raises(LabelcleanError, match="is not empty; pass --overwrite"):
        run_bench(features, out=mine, **fast)
    with pytest.raises(LabelcleanError, match="holds no labelclean bench"):
        run_bench(features, out=mine, overwrite=True, **fast)
    assert tree_digest(mine) == before and stale_siblings(mine) == []
    out = tmp_path / "bench"
    run_bench(features, out=out, **fast)
    assert read_marker(out)["kind"] == "bench" and (out / "bench.csv").is_file()
    (out / "notes.txt").write_text("mine")
    run_bench(features, out=out, overwrite=True, **fast)  # a bench replaces a bench
    assert (out / "notes.txt").read_text() == "mine" and (out / "flags_seed0.csv").is_file()
    line = one_line_error(cli("bench", features, "--out", out, "--seeds", "0",
                              "--model", "mlp:16", "--epochs", "2"))
    assert "pass --overwrite" in line


@pytest.mark.parametrize("args, what", [
    (["--seed", "-1"], "seed must be an integer from 0 to 4294967295"),
    (["--seed", "4294967296"], "seed must be an integer from 0 to 4294967295"),
    (["--tensorboard-dir", "TB"], "tensorboard_dir needs the tensorboard package"),
], ids=["seed -1", "seed 2**32", "tensorboard missing"])
def test_run_settings_are_refused_before_any_data_is_read(tmp_path, features, monkeypatch,
                                                          args, what):
    import sys

    import labelclean.fileformats
    import labelclean.sources
    import labelclean.tables

    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed

    def never(*_a, **_k):
        raise AssertionError("the data was read before the settings were checked")

    # every name the CSV reader is reached by (the formats read through tables')
    for module in (labelclean.sources, labelclean.tables, labelclean.fileformats):
        monkeypatch.setattr(module, "read_csv", never)
    out = tmp_path / "new" / "out"
    args = [str(tmp_path / a) if a == "TB" else a for a in args]
    assert what in one_line_error(cli(*run_args(features, out), *args))
    assert not (tmp_path / "new").exists() and not (tmp_path / "TB").exists()


@pytest.mark.parametrize("args, what", [
    (["--noise", "1.5"], "--noise must be a number in [0, 1)"),
    (["--noise", "-0.1"], "--noise must be a number in [0, 1)"),
    (["--seed", "-5"], "--seed must be an integer from 0"),
])
def test_demo_settings_are_refused_before_any_folder_is_made(tmp_path, args, what):
    out = tmp_path / "demo"
    assert what in one_line_error(cli("demo", "--out", out, *args))
    assert not out.exists()
    # nothing half-made blocks the next, good demo
    assert not any(tmp_path.iterdir())


def test_bench_settings_are_refused_before_any_data_is_read(tmp_path, features):
    for args, what in ((["--seeds", "-1"], "--seeds must be an integer from 0"),
                       (["--rate", "1.5"], "--rate must be a number in [0, 1)"),
                       (["--seed", "0", "--lr", "-1"], "lr must be positive")):
        line = one_line_error(cli("bench", features, "--out", tmp_path / "b", *args))
        assert what in line
    assert not (tmp_path / "b").exists()


# ----------------------------------------------------------------------------- decoding


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny valid-looking PNG whose header claims ``width`` x ``height`` pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


FUZZ_FORMATS = {"png": "PNG", "jpg": "JPEG", "gif": "GIF", "bmp": "BMP", "tif": "TIFF",
                "webp": "WEBP"}


def _fuzz_cases(n_per_format: int, seed: int = 0):
    """``(suffix, bytes)``: small valid images of each format with mutated headers
    (flipped bytes, set bytes, truncations) in their first 64 bytes."""
    import io

    rng = np.random.default_rng(seed)
    for suffix, fmt in FUZZ_FORMATS.items():
        for mode in ("L", "RGB"):
            img = Image.fromarray(rng.integers(0, 255, (12, 10, 3 if mode == "RGB" else 1),
                                               dtype=np.uint8).squeeze(), mode)
            buf = io.BytesIO()
            img.save(buf, format=fmt)
            good = buf.getvalue()
            for _ in range(n_per_format // 2):
                data = bytearray(good)
                how = rng.integers(0, 4)
                head = min(64, len(data))
                for _ in range(int(rng.integers(1, 4))):
                    at = int(rng.integers(0, head))
                    if how == 0:
                        data[at] ^= 1 << int(rng.integers(0, 8))
                    elif how == 1:
                        data[at] = int(rng.choice([0, 0xFF, 0x7F, 0x80]))
                    else:
                        data[at] = int(rng.integers(0, 256))
                if how == 3:
                    data = data[: int(rng.integers(1, len(data)))]
                yield suffix, bytes(data)


def test_no_mutated_image_header_raises_past_the_reader(tmp_path):
    """>= 2,000 mutated PNG/JPEG/GIF/BMP/TIFF/WebP headers: each file is an image
    or an unreadable file with a reason, never an exception; and load_dataset
    over folders of them reads or refuses in one LabelcleanError line."""
    from labelclean.sources import read_image

    cases = list(_fuzz_cases(340))
    assert len(cases) >= 2000
    outcomes = {"image": 0, "unreadable": 0}
    for i, (suffix, data) in enumerate(cases):
        path = tmp_path / f"m{i % 50}.{suffix}"
        path.write_bytes(data)
        got = read_image(path, (8, 8))
        if isinstance(got, str):
            assert got and "\n" not in got and len(got) <= 200
            outcomes["unreadable"] += 1
        else:
            assert got.dtype == np.uint8 and got.shape[:2] == (8, 8)
            outcomes["image"] += 1
    assert outcomes["image"] and outcomes["unreadable"]
    # whole folders of them through load_dataset, with and without --skip-unreadable
    for k in range(3):
        root = tmp_path / f"data{k}"
        for i, (suffix, data) in enumerate(cases[k * 97::31][:60]):
            p = root / f"c{i % 2}" / f"{i}.{suffix}"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        for skip in (True, False):
            try:
                ds = load_dataset(root, skip_unreadable=skip, image_size=8)
            except LabelcleanError as e:
                assert "\n" not in str(e)
            else:
                assert len(ds) + len(ds.unreadable) == 60


def test_a_decompression_bomb_is_an_unreadable_file(tmp_path):
    from labelclean.sources import MAX_IMAGE_PIXELS, read_image

    data = make_folder(tmp_path / "data", n=30)
    bomb = data / "c0" / "bomb.png"
    bomb.write_bytes(_png_claiming(9000, 9000))  # 81 megapixels: over labelclean's limit
    assert 9000 * 9000 > MAX_IMAGE_PIXELS
    assert "image of 9000x9000 pixels, over the limit" in read_image(bomb)
    bomb.write_bytes(_png_claiming(30000, 30000))  # 900 megapixels: over PIL's too
    assert "decompression bomb" in read_image(bomb)
    line = one_line_error(cli(*run_args(data, tmp_path / "out")))
    assert "1 unreadable images (first: c0/bomb.png: " in line and "bomb" in line
    r = cli(*run_args(data, tmp_path / "out", "--skip-unreadable"))
    assert r.exit_code == 0, r.output
    assert pd.read_csv(tmp_path / "out" / "unreadable.csv")["path"].tolist() == ["c0/bomb.png"]


# ----------------------------------------------------------------------------- the report


def _damage(run: Path, how: str) -> None:
    (run / MARKER).unlink()  # no manifest to catch it: the reader must
    doc = json.loads((run / "run.json").read_text())
    edits = {
        "t_c text": ("t_c", "5"),
        "samples text": ("samples", "many"),
        "input a list": ("input", []),
        "classes not names": ("input", {**doc["input"], "classes": [1, 2]}),
        "timing text": ("timing", {"total_seconds": "soon"}),
        "verdict text": ("verdict", "fine"),
        "val accuracy text": ("val_accuracy_at_t_c", "high"),
        "truth text": ("against_truth", {"precision": "x", "recall": 1, "f1": 1,
                                         "true_noise_rate": 0.1}),
        "phase span html": ("phase_boundaries", {"I": [1, "<b>2</b>"]}),
        "params a string": ("params", "x"),
    }
    if how in edits:
        key, value = edits[how]
        doc[key] = value
        (run / "run.json").write_text(json.dumps(doc))
    elif how == "losses truncated":
        p = run / "losses.npy"
        p.write_bytes(p.read_bytes()[:100])
    elif how == "margins text":
        np.save(run / "margins.npy", np.array([["a"]]))
    elif how == "metrics broken":
        (run / "metrics.csv").write_bytes(b"epoch,a\n1,2\n3,4,5,6\n")
    elif how == "metrics epoch text":
        m = pd.read_csv(run / "metrics.csv")
        m["epoch"] = "e" + m["epoch"].astype(str)
        m.to_csv(run / "metrics.csv", index=False)
    elif how == "scores text":
        s = pd.read_csv(run / "scores.csv")
        s["p_noisy"] = "?"
        s.to_csv(run / "scores.csv", index=False)
    else:
        raise ValueError(how)


DAMAGED_RUNS = ["t_c text", "samples text", "input a list", "classes not names", "timing text",
                "verdict text", "val accuracy text", "truth text", "phase span html",
                "params a string", "losses truncated", "margins text", "metrics broken",
                "metrics epoch text", "scores text"]


@pytest.mark.parametrize("how", DAMAGED_RUNS)
def test_report_on_a_damaged_run_is_one_clear_line(tmp_path, previous, how):
    run = copy_run(previous, tmp_path / "run")
    _damage(run, how)
    line = one_line_error(cli("report", run))
    assert "damaged" in line or "cannot read" in line, line


def test_report_escapes_every_value_of_run_json(tmp_path, previous):
    run = copy_run(previous, tmp_path / "run", marker=False)
    doc = json.loads((run / "run.json").read_text())
    evil = "<script>alert(1)</script>"
    doc["phase_boundaries"] = {evil: [1, 2]}
    doc["stop_reason"] = evil
    doc["verdict"] = {**doc.get("verdict", {}), "status": "withheld", "reason": evil,
                      "advice": evil, "text": evil}
    doc["timing"]["epochs_trained"] = 3
    doc["params"]["model"] = evil
    doc["input"]["source"] = evil
    (run / "run.json").write_text(json.dumps(doc))
    r = cli("report", run)
    assert r.exit_code == 0, r.output
    page = (run / "report.html").read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


# ----------------------------------------------------------------------------- the path policy


def test_cache_inside_a_path_csv_image_tree_is_refused(tmp_path, images):
    before, digest = file_hashes(images), tree_digest(images)
    table = _path_csv_over(images, tmp_path / "lists")
    cache = images / "cache"
    line = one_line_error(cli(*run_args(table, tmp_path / "out"), "--cache", cache))
    assert f"--cache {cache} lies inside the input" in line
    with pytest.raises(LabelcleanError, match="lies inside the input"):
        load_dataset(table, cache=images / "c0" / "deeper")
    assert not cache.exists() and not (tmp_path / "out").exists()
    assert file_hashes(images) == before and tree_digest(images) == digest


def test_a_pipe_as_input_is_one_clear_line(tmp_path, features):
    import threading

    fifo = tmp_path / "x.csv"
    os.mkfifo(fifo)  # what `labelclean run <(cat x.csv)` is given
    done = threading.Event()

    def feed_a_reader() -> None:
        # should labelclean open the pipe (as it used to), feed it, so that the
        # test fails instead of hanging
        while not done.wait(0.2):
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                continue  # no reader: good
            with os.fdopen(fd, "wb") as f:
                f.write(features.read_bytes())

    threading.Thread(target=feed_a_reader, daemon=True).start()
    try:
        line = one_line_error(cli(*run_args(fifo, tmp_path / "out")))
    finally:
        done.set()
    assert "is a pipe" in line and "save it to a file first" in line
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- resume


@pytest.mark.parametrize("kind", ["images", "features"])
def test_resume_refuses_data_whose_values_changed(tmp_path, kind):
    fast = dict(model="mlp:16", max_epochs=2, patience=1, min_steps=0, probe_every=0,
                progress=False, batch_size=16)
    if kind == "images":
        data = make_folder(tmp_path / "data", n=30)
    else:
        data = make_features(tmp_path / "data" / "t.csv", ["a", "b", "c"], n=60)
    state = tmp_path / "state"
    Cleaner(**fast).fit(data, state_dir=state)
    Cleaner(**fast).fit(data, state_dir=state, resume=True)  # the same data: resumes
    # same files, same names, same labels; other pixels or feature values
    if kind == "images":
        p = sorted((data / "c0").glob("*.png"))[0]
        Image.fromarray(255 - np.asarray(Image.open(p)), "L").save(p)
    else:
        table = pd.read_csv(data)
        table.loc[3, "f0"] += 1.0
        table.to_csv(data, index=False)
    with pytest.raises(LabelcleanError, match="started on other data .*pixel or feature"):
        Cleaner(**fast).fit(data, state_dir=state, resume=True)


def test_a_full_disk_while_saving_the_resume_state_is_one_line(tmp_path, features,
                                                               monkeypatch):
    def full(*_a, **_k):
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos "
                           "2304 vs 2192\nfile write failed")

    monkeypatch.setattr(torch, "save", full)
    line = one_line_error(cli(*run_args(features, tmp_path / "out")))
    assert "cannot save the resume state in" in line and "disk" in line
    assert not (tmp_path / "out").exists() and stale_siblings(tmp_path / "out") == []


# ----------------------------------------------------------------------------- names


def test_file_names_that_are_not_utf8_are_refused_before_training(tmp_path, monkeypatch):
    """`caf\\xe9.png` under a UTF-8 locale (and any non-ASCII name under LC_ALL=C
    without UTF-8 mode): one line before training, not a traceback after it."""
    import labelclean.training
    from labelclean.resume import data_fingerprint

    def never(*_a, **_k):
        raise AssertionError("trained on names that cannot be written")

    monkeypatch.setattr(labelclean.training.Trainer, "train_epoch", never)
    data = make_folder(tmp_path / "data", n=30)
    p = sorted((data / "c0").iterdir())[0]
    p.rename(p.with_name(os.fsdecode(b"caf\xe9.png")))
    line = one_line_error(cli(*run_args(data, tmp_path / "out")))
    assert "file names in" in line and "caf\\xe9.png" in line
    assert not (tmp_path / "out").exists()
    # the resume fingerprint hashes such a name as the bytes it stands for
    assert data_fingerprint([os.fsdecode(b"caf\xe9.png")], np.zeros(1), ["a"])


@pytest.mark.parametrize("case", ["folder with a trailing space", "labels differing by a space",
                                  "a NUL in a label"])
def test_class_names_are_checked_when_read(tmp_path, case):
    if case == "folder with a trailing space":
        data = make_folder(tmp_path / "data", n=30)
        shutil.copytree(data / "c1", data / "c1 ")
        what = "class folder 'c1 ' has leading or trailing spaces"
    else:
        data = make_features(tmp_path / "t.csv", ["a", "b", "c"], n=60)
        table = pd.read_csv(data)
        table.loc[0, "label"] = "a " if case == "labels differing by a space" else "b\x00"
        table.to_csv(data, index=False)
        what = ("labels 'a' and 'a ' differ only by leading or trailing spaces"
                if case == "labels differing by a space" else "contains the control character")
    assert what in one_line_error(cli(*run_args(data, tmp_path / "out")))
    assert not (tmp_path / "out").exists()


def test_a_class_named_n_a_runs_and_applies(tmp_path):
    """`n/a` is a class name of a table (docs/reliability.md): apply takes the
    unedited run as run took the data."""
    data = make_features(tmp_path / "t.csv", ["n/a", "b", "c"], n=120)
    out = tmp_path / "run"
    r = cli(*run_args(data, out))
    assert r.exit_code == 0, r.output
    r = cli("apply", out, "--out", tmp_path / "final")
    assert r.exit_code == 0, r.output
    assert "n/a" in set(pd.read_csv(tmp_path / "final" / "cleaned.csv",
                                    keep_default_na=False)["label"])


# ----------------------------------------------------------------------------- messages


def test_a_huge_cell_gives_a_bounded_error_line(tmp_path, previous):
    review = tmp_path / "r.csv"
    pd.DataFrame({"index": ["0"], "path": ["x" * 20_000_000], "action": ["remove"]}).to_csv(
        review, index=False)
    line = one_line_error(cli("apply", previous, "--review", review, "--out", tmp_path / "f"))
    assert "no sample with this index and path" in line and len(line) < 1100


def test_a_full_disk_during_apply_names_the_folder_written(tmp_path, previous, monkeypatch):
    import labelclean.writers

    def full(src, target, *_a):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(src))

    monkeypatch.setattr(labelclean.writers, "copy_file", full)
    final = tmp_path / "final"
    line = one_line_error(cli("apply", previous, "--out", final))
    assert f"No space left on device while writing --out {final}" in line
    assert str(json.loads((previous / "run.json").read_text())["input"]["source"]) not in line
    assert not final.exists() and stale_siblings(final) == []


def test_outputs_are_no_more_readable_than_the_input(tmp_path):
    data = make_folder(tmp_path / "data", n=30)
    for p in data.rglob("*"):
        p.chmod(0o700 if p.is_dir() else 0o600)
    data.chmod(0o700)
    out, final = tmp_path / "run", tmp_path / "final"
    r = cli(*run_args(data, out))
    assert r.exit_code == 0, r.output
    assert cli("apply", out, "--out", final).exit_code == 0
    for tree in (out, final):
        for p in [tree, *tree.rglob("*")]:
            if not p.is_symlink():
                assert p.stat().st_mode & 0o077 == 0, p
    # an ordinary input keeps the ordinary modes (rel::test_weights_have_the_mode...)
    assert (out / "report.html").stat().st_mode & 0o777 == 0o600 & ~_umask()


def test_an_edited_copy_with_a_long_name_survives_overwrite(tmp_path):
    """A 249-character image name, its copy in cleaned/ edited, then --overwrite:
    the edited copy is kept under a name that fits (the mapping recorded), and
    the folder stays usable."""
    from labelclean.paths import fit_name
    from labelclean.rundir import RENAMED_FILE

    data = make_folder(tmp_path / "data", n=30)
    for p in sorted((data / "c0").iterdir()):
        p.rename(p.with_name("x" * 240 + p.name))  # 249 characters
    out = tmp_path / "run"
    assert cli(*run_args(data, out)).exit_code == 0
    edited = sorted((out / "cleaned" / "c0").iterdir())[0]
    Image.open(edited).rotate(90).save(edited)
    content = edited.read_bytes()
    r = cli(*run_args(data, out, "--overwrite"))
    assert r.exit_code == 0, r.output
    kept = edited.with_name(fit_name(edited.name, ".previous"))
    assert kept.read_bytes() == content and len(kept.name) <= 255
    log = pd.read_csv(out / RENAMED_FILE)
    assert log.values.tolist() == [[f"cleaned/c0/{edited.name}", f"cleaned/c0/{kept.name}"]]
    assert_complete_run(out)
    assert cli("report", out).exit_code == 0
    assert cli(*run_args(data, out, "--overwrite")).exit_code == 0


# ----------------------------------------------------------------------------- where --out is


def test_an_out_that_is_a_symlink_to_a_folder(tmp_path, features):
    target = tmp_path / "disk" / "runs"
    target.mkdir(parents=True)
    link = tmp_path / "out"
    link.symlink_to(target, target_is_directory=True)
    r = cli(*run_args(features, link))
    assert r.exit_code == 0, r.output
    assert link.is_symlink() and link.resolve() == target
    assert_complete_run(target)
    (target / "notes.txt").write_text("mine")
    r = cli(*run_args(features, link, "--overwrite"))
    assert r.exit_code == 0, r.output
    assert link.is_symlink() and (link / "notes.txt").read_text() == "mine"
    assert_complete_run(target)
    assert stale_siblings(link) == [] and stale_siblings(target) == []


@pytest.fixture
def mount_point(tmp_path):
    """An empty tmpfs mounted at tmp_path/vol (as a Docker volume is); skipped
    where mounting is not allowed."""
    import subprocess

    vol = tmp_path / "vol"
    vol.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(vol)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield vol
    finally:
        subprocess.run(["umount", "-l", str(vol)], check=False)


def test_an_out_that_is_a_mount_point(mount_point, features):
    out = mount_point
    r = cli(*run_args(features, out))
    assert r.exit_code == 0, r.output
    assert os.path.ismount(out)
    assert_complete_run(out)
    (out / "notes.txt").write_text("mine")
    r = cli(*run_args(features, out, "--overwrite"))
    assert r.exit_code == 0, r.output
    assert (out / "notes.txt").read_text() == "mine" and os.path.ismount(out)
    assert_complete_run(out)
    assert not [p for p in out.iterdir() if p.name.startswith(".labelclean-")
                and p.name != MARKER]


@pytest.mark.parametrize("kill_at", [2, 16, 26], ids=["moving aside", "moving in",
                                                     "nearly done"])
def test_a_swap_inside_out_killed_midway_is_undone(tmp_path, previous, images, monkeypatch,
                                                   kill_at):
    """Staging inside --out (as for a mount point), killed between the moves of
    the commit: the next command on --out puts the previous run back whole."""
    import labelclean.rundir

    monkeypatch.setattr(labelclean.rundir, "staged_inside", lambda out: out.is_dir())
    out = copy_run(previous, tmp_path / "out")
    (out / "mine.txt").write_text("mine")
    before = file_hashes(out)
    rename, calls = labelclean.rundir._rename, []

    def dies_at_the_kth_rename(src, dst):
        calls.append(src)
        if len(calls) == kill_at:
            _die()
        rename(src, dst)

    pid = os.fork()
    if pid == 0:
        try:
            labelclean.rundir._rename = dies_at_the_kth_rename
            main(run_args(images, out, "--overwrite"), standalone_mode=False)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status), "the commit has fewer moves than kill_at"
    assert file_hashes(out) != before  # killed halfway through the moves
    (tmp_path / "empty").mkdir()
    one_line_error(cli(*run_args(tmp_path / "empty", out, "--overwrite")))
    assert file_hashes(out) == before and stale_siblings(out) == []
    r = cli(*run_args(images, out, "--overwrite"))
    assert r.exit_code == 0, r.output
    assert_complete_run(out)
    assert (out / "mine.txt").read_text() == "mine"
