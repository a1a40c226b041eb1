"""``labelclean demo``: the whole job on data that ships with the install.

scikit-learn's handwritten digits (1,797 images, 8x8, 10 classes) are written
as a 32x32 PNG image folder with a known fraction of labels changed to another
class, cleaned with the default settings, and the flags are compared with the
truth. No download is needed. To finish in seconds the demo trains an MLP
(``mlp:256,256``) rather than the default CNN, and says so; every other
setting is the default. Pass ``model=...`` to change that.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from . import rundir
from ._io import write_csv, write_json
from .checks import check_rate, check_seed
from .errors import LabelcleanError
from .models import DEFAULT_IMAGE_MODEL
from .noise import inject_noise, precision_recall_f1

SUMMARY = "demo.json"
#: The demo's model: an MLP, so that it finishes in seconds on any CPU.
DEMO_MODEL = "mlp:256,256"


def write_digits_folder(
    root: Path, noise: float, seed: int, size: int = 32
) -> pd.DataFrame:
    """Write digits as ``root/<label>/<index>.png`` with noisy labels; return the truth."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    noisy, mask = inject_noise(digits.target, 10, noise, "symmetric", seed=seed)
    rows = []
    for i, (img, given) in enumerate(zip(images, noisy)):
        rel = f"{given}/{i:04d}.png"
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img, "L").resize((size, size), Image.Resampling.BILINEAR).save(path)
        rows.append((rel, int(digits.target[i]), int(given), bool(mask[i])))
    return pd.DataFrame(rows, columns=["path", "true_label", "given_label", "is_noisy"])


def run_demo(
    out: str | Path,
    *,
    noise: float = 0.2,
    seed: int = 0,
    overwrite: bool = False,
    echo: Callable[[str], None] = print,
    **cleaner_kwargs,
) -> dict:
    """Build the noisy digits folder under ``out/data``, clean it into ``out/run``.

    Returns precision, recall and F1 of the flags against the injected noise, and the
    run's verdict (``Verdict.to_dict()``).
    """
    from .cleaner import Cleaner
    from .summary import print_summary

    # every setting first: a refused one leaves no folder behind
    check_rate(noise, "--noise")
    check_seed(seed, "--seed")
    cleaner_kwargs.setdefault("progress", True)
    cleaner_kwargs.setdefault("seed", seed)
    cleaner_kwargs.setdefault("model", DEMO_MODEL)
    Cleaner(**cleaner_kwargs).validate()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise LabelcleanError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        # Recognised by labelclean's marker, not by a file name anyone can
        # create; only the files the last demo wrote are deleted.
        rundir.check_replaceable(out, kind="demo", overwrite=overwrite)
        rundir.clear(out)
    out.mkdir(parents=True, exist_ok=True)
    theirs = set(rundir.manifest_of(out))  # what the user keeps here
    rundir.mark(out, "demo", complete=False)
    write_json(out / SUMMARY, {"status": "started", "noise": noise, "seed": seed})
    echo(f"writing 1797 digits with {noise:.0%} wrong labels to {out / 'data'}")
    truth = write_digits_folder(out / "data", noise, seed)
    write_csv(out / "truth.csv", truth)
    # The demo must finish in well under a minute on a laptop CPU: an MLP learns
    # 8x8 digits in seconds, where the default CNN takes minutes (docs/benchmarks.md,
    # "Dataset zoo"). Every other setting is the default.
    echo(f"cleaning with model {cleaner_kwargs['model']} (the default for images is "
         f"{DEFAULT_IMAGE_MODEL}; the demo uses an MLP to finish in seconds), "
         "every other setting at its default")
    result = Cleaner(**cleaner_kwargs).fit(out / "data", noise_mask=_mask_in_order(truth))
    result.export(out / "run", overwrite=True)  # run/ keeps its own marker
    print_summary(result, out / "run")
    flags = result.scores.sort_values("index")["flagged"].to_numpy()
    mask = _mask_in_order(truth)
    precision, recall, f1 = precision_recall_f1(flags, mask)
    echo(
        f"against the truth  precision {precision:.3f}  recall {recall:.3f}  F1 {f1:.3f}"
        f"  ({int(mask.sum())} labels were wrong)"
    )
    summary = {"precision": precision, "recall": recall, "f1": f1, "noise": noise, "seed": seed,
               "verdict": result.verdict.to_dict()}
    write_json(out / SUMMARY, summary)
    ours = [rel for rel in rundir.manifest_of(out)
            if rel not in theirs and not rel.startswith("run/")]
    rundir.mark(out, "demo", complete=True, files=ours)
    return summary


def _mask_in_order(truth: pd.DataFrame) -> np.ndarray:
    # load_dataset orders samples by class folder then file name: match it.
    order = truth.assign(
        cls=truth["given_label"], name=truth["path"].str.split("/").str[-1]
    ).sort_values(["cls", "name"])
    return order["is_noisy"].to_numpy()
