"""Does a refactor change what a run decides? The MNIST slow test's run, fingerprinted.

Writes 10,000 MNIST training images with 40% symmetric noise (the set-up of
``tests/test_mnist_e2e.py``, seed 0) as an image folder under ``--root`` (once),
runs ``labelclean run`` on it with every default, and prints ``t_c``, the verdict,
the number of flags and a hash of the flagged paths. Run it with two checkouts on
``PYTHONPATH`` and compare the lines:

    PYTHONPATH=/path/to/old/checkout python studies/same_run.py old
    PYTHONPATH=. python studies/same_run.py new
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from click.testing import CliRunner
from PIL import Image

import labelclean
from labelclean.cli import main as cli
from labelclean.noise import inject_noise

MNIST = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "mnist.npz"


def write_folder(data: Path) -> None:
    d = np.load(MNIST)
    idx = np.sort(np.random.default_rng(0).choice(60_000, 10_000, replace=False))
    noisy, _ = inject_noise(d["y_train"][idx], 10, 0.4, "symmetric", seed=0)
    for i, (img, label) in enumerate(zip(d["x_train"][idx], noisy)):
        p = data / str(label) / f"{i:05d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img, "L").save(p)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("tag", help="a name for this checkout's run folder")
    ap.add_argument("--root", type=Path, default=Path("bench_out/same_run"))
    args = ap.parse_args()
    data = args.root / "data"
    if not data.exists():
        write_folder(data)
    torch.set_num_threads(2)
    out = args.root / f"run_{args.tag}"
    result = CliRunner().invoke(cli, ["run", str(data), "--out", str(out), "--overwrite"])
    run = json.loads((out / "run.json").read_text())
    flagged = sorted(pd.read_csv(out / "flagged_samples.csv")["path"])
    verdict = run.get("verdict")
    print(json.dumps({
        "tag": args.tag, "version": labelclean.__version__, "exit": result.exit_code,
        "t_c": run.get("t_c"),
        "verdict": verdict.get("status") if isinstance(verdict, dict) else verdict,
        "flagged": len(flagged),
        "flags_sha256": hashlib.sha256("\n".join(flagged).encode()).hexdigest()[:16]}))


if __name__ == "__main__":
    main()
