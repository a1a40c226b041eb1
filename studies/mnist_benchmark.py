"""MNIST as an image folder with injected label noise, cleaned by ``labelclean run``.

Writes ``--n`` MNIST training images (from ``../shared/datasets/mnist.npz``) as
``<out>/data/<label>/<index>.png`` with a fraction ``--noise`` of labels changed
to a random other class, and the 10,000 test images as ``<out>/test``; runs the
CLI with default settings (plus any extra arguments after ``--``), then reports
precision, recall and F1 of the flags against the injected truth, ``t_c``, wall
time (in all, and up to the end of epoch ``t_c``), the run's peak resident
memory and the test accuracy of the early-stopped checkpoint.

    python studies/mnist_benchmark.py --n 10000 --noise 0.4 --out bench_out/mnist40
    python studies/mnist_benchmark.py --n 10000 --noise 0.0 --out bench_out/mnist0
    for n in 2500 10000 40000; do   # wall time to t_c against N (docs/performance.md)
        python studies/mnist_benchmark.py --n $n --noise 0.4 --out bench_out/scale_$n
    done
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from labelclean import load_checkpoint
from labelclean.noise import inject_noise

MNIST = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "mnist.npz"


def write_folder(root: Path, images: np.ndarray, labels: np.ndarray) -> list[str]:
    rel = []
    for i, (img, lab) in enumerate(zip(images, labels)):
        p = root / str(lab) / f"{i:05d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img, "L").save(p)
        rel.append(p.relative_to(root).as_posix())
    return rel


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--noise", type=float, default=0.4)
    ap.add_argument("--kind", default="symmetric")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--mnist", type=Path, default=MNIST)
    ap.add_argument("extra", nargs="*", help="extra arguments for labelclean run (after --)")
    args = ap.parse_args()

    d = np.load(args.mnist)
    rng = np.random.default_rng(args.seed)
    idx = np.sort(rng.choice(len(d["y_train"]), args.n, replace=False))
    x, y = d["x_train"][idx], d["y_train"][idx]
    noisy, mask = inject_noise(y, 10, args.noise, args.kind, seed=args.seed)
    if args.out.exists():
        shutil.rmtree(args.out)
    rel = write_folder(args.out / "data", x, noisy)
    truth = dict(zip(rel, mask.tolist()))
    write_folder(args.out / "test", d["x_test"], d["y_test"])

    cmd = ["labelclean", "run", str(args.out / "data"), "--out", str(args.out / "run"), *args.extra]
    print("$", " ".join(cmd), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - start

    # ru_maxrss of the largest child so far: the labelclean run (KiB on Linux)
    peak_rss_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    run = json.loads((args.out / "run" / "run.json").read_text())
    import pandas as pd

    metrics = pd.read_csv(args.out / "run" / "metrics.csv")
    upto = metrics[metrics.epoch <= run["t_c"]]
    # training and observation of epochs 1..t_c (decoding and export excluded)
    seconds_to_tc = float((upto.seconds_train + upto.seconds_observe).sum())

    flagged = set(pd.read_csv(args.out / "run" / "flagged_samples.csv")["path"])
    wrong = {p for p, w in truth.items() if w}
    tp = len(flagged & wrong)
    precision = tp / max(1, len(flagged))
    recall = tp / max(1, len(wrong))
    f1 = 0.0 if tp == 0 else 2 * precision * recall / (precision + recall)

    ck = load_checkpoint(args.out / "run")
    probs = ck.predict_proba(__import__("torch").from_numpy(d["x_test"][:, None].copy()))
    test_acc = float((np.asarray(ck.classes)[probs.argmax(1)].astype(int) == d["y_test"]).mean())
    result = {
        "n": args.n, "noise": args.noise, "kind": args.kind, "seed": args.seed,
        "flagged": len(flagged), "flagged_fraction": len(flagged) / args.n,
        "precision": precision, "recall": recall, "f1": f1, "t_c": run["t_c"],
        "epochs_trained": run["timing"]["epochs_trained"], "wall_seconds": wall,
        "seconds_to_t_c": seconds_to_tc, "peak_rss_mib": peak_rss_mib,
        "seconds_per_epoch_train": float(metrics.seconds_train.mean()),
        "seconds_per_epoch_observe": float(metrics.seconds_observe.mean()),
        "train_seconds": run["timing"]["train_seconds"],
        "observe_seconds": run["timing"]["observe_seconds"],
        "test_accuracy_at_t_c": test_acc, "model": run["params"]["model"],
    }
    (args.out / "benchmark.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    sys.exit(main())
