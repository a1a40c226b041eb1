"""Every GPU measurement in one prepared run, for a short lease on a lent GPU.

Three stages, each bounded in time, results written as they arrive:

1. ``smoke``: ``Cleaner.fit`` on 3,000 MNIST images for 2 epochs on the GPU,
   with the order-parameter probe every epoch, once per suspicion: the CUDA
   path end to end (bf16 autocast, channels_last, data on the device).
2. ``speed`` (alone on the GPU): ``bench_speed.py`` on the 60,000 MNIST
   training images and on 50,000 synthetic 3x32x32 images, and the wall time to
   ``t_c`` of whole ``Cleaner.fit`` runs on the 60,000 images at 40 % noise.
3. ``quality`` (jobs in parallel, ``--workers`` processes sharing the GPU;
   throughput is not measured here): ``tc_sweep.py`` trajectories of the
   default CNN on a 20,000-image MNIST subset (clean, symmetric 0.2/0.5/0.8,
   pair-flip 0.4; 3 seeds), ``cv_probs.py`` 5-fold out-of-sample
   probabilities for cleanlab on the same noisy labels, and
   ``bench_mnist.py --retrain`` for ``Q``. Jobs still queued at the deadline
   are skipped and listed.

    python studies/gpu_session.py --mnist .devdata/mnist.npz --results /tmp/r --deadline 420

``--dry-run`` does the same at toy sizes on the CPU (to check the script).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SETTINGS = ["symmetric:0", "symmetric:0.2", "symmetric:0.5", "symmetric:0.8", "pairflip:0.4"]


def run(cmd: list[str], log: Path, timeout: float) -> int:
    start = time.perf_counter()
    with log.open("w") as f:
        try:
            rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = 124
    print(f"[{time.strftime('%H:%M:%S')}] rc={rc} {time.perf_counter() - start:6.1f}s "
          f"{log.name}", flush=True)
    return rc


def smoke(args, py: str) -> None:
    code = f"""
import numpy as np, torch, json, time
from labelclean import Cleaner, Dataset
from labelclean.noise import inject_noise
d = np.load({str(args.mnist)!r}); n = {args.smoke_n}
y, mask = inject_noise(d["y_train"][:n], 10, 0.4, "symmetric", seed=0)
ds = Dataset.from_arrays(d["x_train"][:n], y, noise_mask=mask)
print(torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")
for s in ("loss", "aum"):
    t = time.perf_counter()
    r = Cleaner(device={args.device!r}, max_epochs=2, probe_every=1, suspicion=s,
                loss_pass="train" if s == "aum" else "eval").fit(ds, noise_mask=mask)
    h = r.history
    print(s, "ok", round(time.perf_counter() - t, 1), "s", r.params["device"],
          "R_cw", h.get("R_cw", [float("nan")]).tolist(), "A", h.get("A", []).tolist())
"""
    run([py, "-c", code], args.results / "smoke.log", 120)


def speed(args, py: str) -> None:
    common = [py, str(HERE / "bench_speed.py"), "--device", args.device, "--mnist",
              str(args.mnist), "--threads", str(args.threads)]
    run(common + ["--n", str(args.speed_n), "--epochs", "2", "--time-to-tc",
                  "--json", str(args.results / "speed_mnist.json")],
        args.results / "speed_mnist.log", args.speed_timeout)
    run(common + ["--n", str(args.rgb_n), "--epochs", "2", "--synthetic-rgb",
                  "--json", str(args.results / "speed_rgb.json")],
        args.results / "speed_rgb.log", args.speed_timeout / 2)


def quality_jobs(args, py: str) -> list[tuple[str, list[str]]]:
    """All jobs, in priority order: seed by seed, the trajectories, then the
    cross-validation for each noisy setting, then Q at 0.8; the clean
    cross-validations and Q at 0.5 and 0.2 last."""
    res = str(args.results)
    common = ["--mnist", str(args.mnist), "--n", str(args.n), "--device", args.device,
              "--threads", "1"]

    def sweep(setting, seed):
        return (f"sweep_{setting.replace(':', '')}_s{seed}",
                [py, str(HERE / "tc_sweep.py"), "--model", args.model, "--epochs",
                 str(args.epochs), "--seeds", str(seed), "--settings", setting,
                 "--record-train", "--half", "--out", f"{res}/sweep", *common])

    def cv(setting, seed):
        kind, rate = setting.split(":")
        return (f"cv_{kind}{rate}_s{seed}",
                [py, str(HERE / "cv_probs.py"), "--model", args.model, "--noise", kind,
                 "--rate", rate, "--seed", str(seed), "--epochs", str(args.cv_epochs),
                 "--out", f"{res}/cv", *common])

    def q(rate, seed):
        return (f"q_symmetric{rate}_s{seed}",
                [py, str(HERE / "bench_mnist.py"), "--noise", "symmetric", "--rate", rate,
                 "--seeds", str(seed), "--retrain", "--out", f"{res}/q/symmetric{rate}_s{seed}",
                 *common, "--model", args.model, "--max_epochs", str(args.epochs),
                 "--suspicion", "aum", "--loss_pass", "train", "--probe_every", "auto"])

    jobs = []
    for seed in args.seeds:
        jobs += [sweep(s, seed) for s in SETTINGS]
        jobs += [cv(s, seed) for s in SETTINGS[1:]]
        jobs.append(q("0.8", seed))
    for seed in args.seeds:
        jobs += [cv(SETTINGS[0], seed), q("0.5", seed), q("0.2", seed)]
    return jobs


def quality(args, py: str, deadline: float) -> None:
    jobs = quality_jobs(args, py)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    logs = args.results / "logs"
    logs.mkdir(exist_ok=True)
    running: list[tuple[str, subprocess.Popen, float, object]] = []
    done, skipped = [], []
    while jobs or running:
        now = time.monotonic()
        while jobs and len(running) < args.workers:
            name, cmd = jobs.pop(0)
            if now > deadline - args.min_job_s:
                skipped.append(name)
                continue
            f = (logs / f"{name}.log").open("w")
            running.append((name, subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT,
                                                   env=env), now, f))
        still = []
        for name, p, t0, f in running:
            if p.poll() is not None:
                f.close()
                done.append({"job": name, "rc": p.returncode, "s": round(now - t0, 1)})
                print(f"[{time.strftime('%H:%M:%S')}] rc={p.returncode} {now - t0:6.1f}s {name}",
                      flush=True)
            elif now > deadline:
                p.kill()
                f.close()
                done.append({"job": name, "rc": "killed", "s": round(now - t0, 1)})
                print(f"killed at deadline: {name}", flush=True)
            else:
                still.append((name, p, t0, f))
        running = still
        time.sleep(0.5)
    (args.results / "jobs.json").write_text(json.dumps({"done": done, "skipped": skipped},
                                                       indent=1))
    print(f"skipped (deadline): {skipped}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--mnist", type=Path, required=True)
    ap.add_argument("--results", type=Path, required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--deadline", type=float, default=420, help="seconds for all three stages")
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--threads", type=int, default=4, help="torch threads in the speed stage")
    ap.add_argument("--model", default="regnetx_002")
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--epochs", type=int, default=16)
    ap.add_argument("--cv-epochs", type=int, default=10)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--speed-n", type=int, default=60_000)
    ap.add_argument("--rgb-n", type=int, default=50_000)
    ap.add_argument("--speed-timeout", type=float, default=150)
    ap.add_argument("--smoke-n", type=int, default=3000)
    ap.add_argument("--min-job-s", type=float, default=25,
                    help="start no job later than this before the deadline")
    ap.add_argument("--stages", nargs="+", default=["smoke", "speed", "quality"])
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args()
    if args.dry_run:
        args.device, args.n, args.epochs, args.cv_epochs = "cpu", 600, 2, 1
        args.speed_n, args.rgb_n, args.smoke_n, args.seeds = 600, 300, 400, [0]
        args.workers = 2
    start = time.monotonic()
    args.results.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    if "smoke" in args.stages:
        smoke(args, py)
    if "speed" in args.stages:
        speed(args, py)
    if "quality" in args.stages:
        quality(args, py, start + args.deadline)
    print(f"total {time.monotonic() - start:.0f}s", flush=True)


if __name__ == "__main__":
    main()
