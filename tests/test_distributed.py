"""One cleaning run over two gloo processes on the CPU (issue 15).

The end-to-end test launches ``labelclean run --nproc 2`` (torchrun underneath)
and the same command on one process, and compares what they wrote.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from labelclean import distributed
from labelclean.cli import main

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = distributed.TIMEOUT_ENV


# ------------------------------------------------------------------ pure helpers


@pytest.mark.parametrize("n", [1, 7, 10, 600, 1001])
@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_shards_tile_the_samples_exactly_once(n, world):
    covered = np.concatenate(
        [np.arange(*distributed.shard_bounds(n, r, world)) for r in range(world)]
    )
    assert np.array_equal(covered, np.arange(n))


def test_batch_sizes_keep_the_one_process_rule_and_feed_every_rank():
    for n in range(2, 300):
        old = [len(b) for b in torch.arange(n).split(32)]
        if len(old) > 1 and old[-1] == 1:
            old[-2:] = [old[-2] + 1]
        assert distributed.batch_sizes(n, 32) == old
        for world in (2, 4):
            sizes = distributed.batch_sizes(n, 32, world)
            assert sum(sizes) == n
            if len(sizes) > 1:  # every rank gets two samples of every step
                assert min(sizes) >= 2 * world


def test_torchrun_command_drops_nproc_only():
    cmd = distributed.torchrun_command(3, ["run", "d.csv", "--nproc", "3", "--out", "o",
                                           "--nproc=3", "--seed", "1"])
    assert cmd[-6:] == ["labelclean", "run", "d.csv", "--out", "o", "--seed", "1"][-6:]
    assert "--nproc-per-node=3" in cmd and "--standalone" in cmd
    assert "--nproc" not in cmd and "--nproc=3" not in cmd


@pytest.mark.parametrize(
    ("extra", "env", "message"),
    [
        (["--nproc", "2"], {"WORLD_SIZE": "2", "RANK": "0"}, "leave it out under torchrun"),
        (["--device", "cuda:1"], {"WORLD_SIZE": "2", "RANK": "0"}, "each rank takes cuda"),
        ([], {"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": ""}, "could not join"),
        ([], {"WORLD_SIZE": "2", "RANK": "0", TIMEOUT: "soon"}, "positive number"),
    ],
)
def test_bad_distributed_launches_are_one_line(tmp_path, monkeypatch, extra, env, message):
    _features(tmp_path / "feats.csv", n=60)
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    res = CliRunner().invoke(main, ["run", str(tmp_path / "feats.csv"), "--out",
                                    str(tmp_path / "out"), "--device", "cpu", *extra])
    assert res.exit_code == 2, res.output
    assert message in res.output and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ collectives


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, q) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE="2", LABELCLEAN_DIST_TIMEOUT="20")
    torch.set_num_threads(1)
    d, device = distributed.setup("auto")
    out: dict = {"rank": rank, "device": device, "backend": torch.distributed.get_backend()}
    # uneven shares (4 rows and 3 rows), out of order: padding must not leak in
    idx = torch.arange(rank, 7, 2).flip(0)
    vals = torch.stack([idx.float(), 10 * idx.float()], 1)
    table = distributed.gather_rows(d, vals, idx, 7)
    out["gathered"] = table.tolist()
    dup = idx if rank == 0 else torch.cat([idx[:-1], torch.tensor([0])])
    try:
        distributed.gather_rows(d, torch.stack([dup.float(), dup.float()], 1), dup, 7)
        out["duplicate_raised"] = False
    except RuntimeError:
        out["duplicate_raised"] = True
    out["stop_rank0_true"] = distributed.stop_together(d, rank == 0)
    out["stop_rank0_false"] = distributed.stop_together(d, rank == 1)
    q.put(out)
    if rank == 1:
        q.close()
        q.join_thread()  # os._exit would drop what the queue has not sent yet
        os._exit(1)  # dies without a word, as a killed rank does
    started = time.perf_counter()
    try:
        distributed.stop_together(d, False)
        q.put({"survivor": "returned"})
    except Exception as e:  # noqa: BLE001 - any error is an exit, which is the point
        q.put({"survivor": type(e).__name__, "seconds": time.perf_counter() - started})
    q.close()
    q.join_thread()
    os._exit(0)


def test_gather_stop_and_a_dead_rank_over_gloo():
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, port, q)) for r in range(2)]
    for p in procs:
        p.start()
    results = [q.get(timeout=90) for _ in range(3)]
    for p in procs:
        p.join(timeout=60)
        assert not p.is_alive()
    ranks = {r["rank"]: r for r in results if "rank" in r}
    survivor = next(r for r in results if "survivor" in r)
    want = [[float(i), 10.0 * i] for i in range(7)]
    for r in (0, 1):
        assert ranks[r]["backend"] == "gloo" and ranks[r]["device"] == "cpu"
        assert ranks[r]["gathered"] == want
        assert ranks[r]["duplicate_raised"]
        assert ranks[r]["stop_rank0_true"] is True and ranks[r]["stop_rank0_false"] is False
    # the survivor of a dead peer errors out instead of waiting forever
    assert survivor["survivor"] != "returned"
    assert survivor["seconds"] < 30


# ------------------------------------------------------------------ end to end


def _features(path: Path, n: int = 600, classes: int = 3, dim: int = 16) -> np.ndarray:
    rng = np.random.default_rng(0)
    y = rng.integers(0, classes, n)
    x = rng.normal(0, 1.5, (classes, dim))[y] + rng.normal(0, 1, (n, dim))
    mask = np.zeros(n, dtype=bool)
    mask[rng.choice(n, n // 5, replace=False)] = True
    given = y.copy()
    given[mask] = (y[mask] + rng.integers(1, classes, mask.sum())) % classes
    df = pd.DataFrame(x, columns=[f"f{i}" for i in range(dim)])
    df["label"] = given
    df.to_csv(path, index=False)
    return mask


ARGS = ["--device", "cpu", "--batch-size", "32", "--max-epochs", "20", "--min-steps", "100",
        "--patience-steps", "50", "--probe-every", "4", "--probe-batches", "4",
        "--no-embeddings", "--seed", "3"]


def test_two_processes_match_one_process(tmp_path):
    mask = _features(tmp_path / "feats.csv")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]), "OMP_NUM_THREADS": "1"}
    two = subprocess.run(
        [sys.executable, "-m", "labelclean", "run", str(tmp_path / "feats.csv"),
         "--out", str(tmp_path / "out2"), "--nproc", "2", *ARGS],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    one = CliRunner().invoke(
        main, ["run", str(tmp_path / "feats.csv"), "--out", str(tmp_path / "out1"), *ARGS]
    )
    assert one.exit_code == 0, one.output

    # written once, by rank 0: one summary, one output folder, no staging leftovers
    assert two.stdout.count("verdict ") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["feats.csv", "out1", "out2"]
    run2 = json.loads((tmp_path / "out2" / "run.json").read_text())
    assert json.dumps(run2).count('"world_size": 2') == 1
    # the canaries (on by default) train on every rank under the labels rank 0 drew
    run1 = json.loads((tmp_path / "out1" / "run.json").read_text())
    e1, e2 = run1["estimate"], run2["estimate"]
    assert e2["canaries"] == e1["canaries"] > 0 and e2["flagged"] == e1["flagged"]
    assert e2["precision"]["value"] == pytest.approx(e1["precision"]["value"], abs=1e-3)

    # every sample measured once per epoch, in its own place: the per-sample
    # losses equal the one-process run's up to float summation order
    l1, l2 = (np.load(tmp_path / o / "losses.npy") for o in ("out1", "out2"))
    assert l1.shape == l2.shape and np.isfinite(l2).all()
    np.testing.assert_allclose(l2, l1, atol=1e-4)

    s1, s2 = (pd.read_csv(tmp_path / o / "scores.csv") for o in ("out1", "out2"))
    f1, f2 = (set(s.loc[s.flagged, "index"]) for s in (s1, s2))
    assert f1 == f2 and len(f1) > 0.5 * mask.sum()
    assert len(f1 & set(np.flatnonzero(mask))) / len(f1) > 0.9

    m1, m2 = (pd.read_csv(tmp_path / o / "metrics.csv") for o in ("out1", "out2"))
    assert list(m1.epoch) == list(m2.epoch)
    # the probe (rank 0, global batches) means the same as on one process
    probed = m1["A"].notna()
    assert probed.sum() >= 2 and (m2["A"].notna() == probed).all()
    for col in ("A", "R", "train_loss", "eval_accuracy"):
        np.testing.assert_allclose(m2.loc[probed, col], m1.loc[probed, col], rtol=1e-3)


# Hold every rank at global SGD step HOLD_AT after announcing its pid in
# held-<rank>, so the job can be killed mid-epoch at a known point.
HOLD_WRAPPER = """
import os, sys, time
from pathlib import Path
import torch

hold_at = int(os.environ.get("HOLD_AT") or 0)
steps = [0]
original_step = torch.optim.SGD.step
def step(self, *args, **kwargs):
    steps[0] += 1
    if steps[0] == hold_at:
        Path(os.environ["HOLD_DIR"], "held-" + os.environ["RANK"]).write_text(str(os.getpid()))
        time.sleep(300)
    return original_step(self, *args, **kwargs)
torch.optim.SGD.step = step

from labelclean.cli import main
main(sys.argv[1:], prog_name="labelclean")
"""


def test_a_killed_two_process_run_resumes_to_the_same_result(tmp_path):
    _features(tmp_path / "feats.csv")
    script = tmp_path / "wrapper.py"
    script.write_text(HOLD_WRAPPER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]), "OMP_NUM_THREADS": "1",
        "HOLD_DIR": str(tmp_path)}

    def launch(out: str, *extra: str, hold: int = 0) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--standalone",
             "--nproc-per-node", "2", str(script), "run", str(tmp_path / "feats.csv"),
             "--out", str(tmp_path / out), *ARGS, *extra],
            env={**env, "HOLD_AT": str(hold)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)

    def finish(proc: subprocess.Popen) -> None:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]

    finish(launch("whole"))
    # 600 samples at batch 32: 19 steps an epoch; step 62 is mid-epoch 4
    job = launch("killed", hold=62)
    held = [tmp_path / "held-0", tmp_path / "held-1"]
    deadline = time.monotonic() + 300
    while not all(h.exists() and h.read_text() for h in held):
        assert job.poll() is None, job.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the job never reached the hold point"
        time.sleep(0.05)
    for pid in [int(h.read_text()) for h in held] + [job.pid]:  # the ranks, then torchrun
        os.kill(pid, 9)
    job.wait(timeout=60)
    assert not (tmp_path / "killed").exists()  # nothing half-written where --out should be

    finish(launch("killed", "--resume"))
    whole, resumed = tmp_path / "whole", tmp_path / "killed"
    pd.testing.assert_frame_equal(pd.read_csv(whole / "flagged_samples.csv"),
                                  pd.read_csv(resumed / "flagged_samples.csv"))
    mw, mr = (pd.read_csv(p / "metrics.csv").filter(regex="^(?!seconds_)")
              for p in (whole, resumed))
    pd.testing.assert_frame_equal(mw, mr)
    assert json.loads((whole / "run.json").read_text())["t_c"] == json.loads(
        (resumed / "run.json").read_text())["t_c"]
    np.testing.assert_array_equal(np.load(whole / "losses.npy"), np.load(resumed / "losses.npy"))
