"""The dataset zoo: the default ``labelclean run`` on data it was not tuned on, beside cleanlab.

Each cell writes a dataset as a user would have it (an image folder, or a
``path,label`` CSV for the CIFAR-10N label sets), runs ``labelclean run DATA
--out RUN`` with every default in a subprocess, scores ``flagged_samples.csv``
against the truth, and runs cleanlab's 5-fold confident learning
(``find_label_issues`` on out-of-fold ``pred_probs``) with the same model,
the same batch size and learning rate, and as many epochs per fold as the
labelclean run trained. One row per cell goes to ``zoo.csv``; ``--markdown``
writes the table.

Datasets: ``shapes`` (:func:`labelclean.synthetic.make_shapes`, 1,000 32x32
RGB, 5 classes), ``digits`` (scikit-learn's 1,797 8x8 digits at 32 px),
``mnist1000`` / ``mnist4000`` / ``mnist10000`` (``../shared/datasets/mnist.npz``),
``cifar10n`` (``../shared/datasets/cifar10n_dev``; its cells are the human
label sets ``clean``, ``worse``, ``aggre``, ``random1``). Noise cells:
``clean``, ``sym0.2``, ``sym0.4``, ``pair0.4``, and ``random`` (every label drawn
at random: nothing to learn, the run must come back withheld).

    python studies/zoo.py shapes:sym0.2 digits:sym0.2 --out bench_out/zoo --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from labelclean.noise import inject_noise, precision_recall_f1
from labelclean.synthetic import make_shapes, write_image_folder

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets"
NOISE = {"clean": ("symmetric", 0.0), "sym0.2": ("symmetric", 0.2),
         "sym0.4": ("symmetric", 0.4), "sym0.8": ("symmetric", 0.8),
         "pair0.4": ("pairflip", 0.4)}


def arrays(name: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(images (N, H, W[, 3]) uint8, true labels, class names)``."""
    if name == "shapes":
        return make_shapes(200, 5, 32, seed=0)
    if name == "digits":
        from PIL import Image
        from sklearn.datasets import load_digits

        d = load_digits()
        small = (d.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
        big = np.stack([np.asarray(Image.fromarray(i).resize((32, 32), Image.Resampling.BILINEAR))
                        for i in small])
        return big, d.target.astype(np.int64), [str(k) for k in range(10)]
    if name.startswith("mnist"):
        n = int(name[5:])
        d = np.load(SHARED / "mnist.npz")
        idx = np.sort(np.random.default_rng(0).choice(60_000, n, replace=False))
        return d["x_train"][idx], d["y_train"][idx].astype(np.int64), [str(k) for k in range(10)]
    raise ValueError(f"unknown dataset {name!r}")


def write_cell(dataset: str, cell: str, root: Path) -> tuple[Path, dict[str, bool]]:
    """Write the cell's data under ``root``; return the path to run on and
    ``{sample id as labelclean names it: label is wrong}``."""
    if dataset == "cifar10n":
        base = (SHARED / "cifar10n_dev").resolve()
        table = pd.read_csv(base / "labels.csv")
        given = table["clean" if cell == "clean" else cell]
        csv = root / "labels.csv"
        root.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"path": [str(base / p) for p in table["path"]], "label": given}).to_csv(
            csv, index=False)
        return csv, {str(base / p): bool(g != c)
                     for p, g, c in zip(table["path"], given, table["clean"])}
    x, y, classes = arrays(dataset)
    if cell == "random":  # no learnable signal: every label drawn at random
        noisy = np.random.default_rng(0).integers(0, len(classes), len(y))
        mask = noisy != y
    else:
        kind, rate = NOISE[cell]
        noisy, mask = inject_noise(y, len(classes), rate, kind, seed=0) if rate else (y, y != y)
    paths = write_image_folder(root / "data", x, noisy, classes)
    return root / "data", dict(zip(paths, mask.tolist()))


def run_labelclean(data: Path, out: Path, threads: int, extra: tuple[str, ...] = ()) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "labelclean", "run", str(data), "--out", str(out),
           "--overwrite", *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode not in (0, 3):
        raise RuntimeError(proc.stderr[-2000:])
    run = json.loads((out / "run.json").read_text())
    flagged = pd.read_csv(out / "flagged_samples.csv", dtype=str, keep_default_na=False)
    column = "path" if "path" in flagged else flagged.columns[1]
    return {"run": run, "flagged": set(flagged[column]), "wall": wall,
            "exit": proc.returncode}


def run_cleanlab(data: Path, run: dict, threads: int, folds: int = 5) -> tuple[set, float]:
    """cleanlab's confident learning on out-of-fold pred_probs of the same model."""
    from cleanlab.filter import find_label_issues
    from sklearn.model_selection import StratifiedKFold

    from labelclean import Cleaner
    from labelclean.models import create_model
    from labelclean.sources import load_dataset
    from labelclean.training import Trainer

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    ds = load_dataset(data)
    params = run["params"]
    epochs = int(run["timing"]["epochs_trained"])
    cleaner = Cleaner(model=params["model"], batch_size=params["batch_size"], lr=params["lr"],
                      max_epochs=epochs, augment=params.get("augment", "none"))
    probs = np.zeros((len(ds), ds.num_classes))
    for k, (tr, te) in enumerate(
            StratifiedKFold(folds, shuffle=True, random_state=0).split(np.zeros(len(ds)), ds.y)):
        torch.manual_seed(k)
        part = ds.subset(tr)
        x = part.x
        mean = x.float().mean(dim=(0, 2, 3)).reshape(-1, 1, 1)
        std = x.float().std(dim=(0, 2, 3)).reshape(-1, 1, 1)
        net = create_model(params["model"], ds.input_shape, ds.num_classes, mean, std)
        trainer = Trainer(net, x, part.y, cleaner.train_config(len(part)))
        for _ in range(epochs):
            trainer.train_epoch()
        probs[te] = trainer.predict_proba(ds.x[torch.as_tensor(te)])
    issues = find_label_issues(ds.y, probs / probs.sum(1, keepdims=True))
    return {ds.ids[i] for i in np.flatnonzero(issues)}, time.perf_counter() - t0


def score(flagged: set, truth: dict[str, bool]) -> tuple[float, float, float]:
    ids = list(truth)
    return precision_recall_f1(np.array([i in flagged for i in ids]),
                               np.array([truth[i] for i in ids]))


def markdown(df: pd.DataFrame) -> str:
    def cell(v: object) -> str:
        return f"{v:.3f}" if isinstance(v, float) and not float(v).is_integer() else str(v)

    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("cells", nargs="+", help="dataset:cell, e.g. shapes:sym0.2 cifar10n:worse")
    ap.add_argument("--out", type=Path, default=Path("bench_out/zoo"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-cleanlab", action="store_true")
    ap.add_argument("--cleanlab-if-flagged", action="store_true",
                    help="run cleanlab only beside a run that flagged (the floor compares those)")
    ap.add_argument("--cleanlab-only", action="store_true",
                    help="run cleanlab beside cells already in --out, without rerunning labelclean")
    ap.add_argument("--markdown", type=Path, default=None)
    ap.add_argument("--labelclean-args", default="",
                    help="options added to every `labelclean run` "
                         "(a study, not the zoo's defaults)")
    args = ap.parse_args()
    rows = []
    table = args.out / "zoo.csv"
    if table.exists():
        rows = pd.read_csv(table).to_dict("records")
    for spec in args.cells:
        dataset, cell = spec.split(":")
        work = args.out / f"{dataset}_{cell}"
        if args.cleanlab_only and not (work / "run" / "run.json").exists():
            raise SystemExit(f"{spec}: no saved run in {work}; run the cell first")
        saved = work / "truth.json"
        if saved.exists():
            cell_data = json.loads(saved.read_text())
            data, truth = Path(cell_data["data"]), cell_data["truth"]
        else:
            data, truth = write_cell(dataset, cell, work)
            saved.write_text(json.dumps({"data": str(data), "truth": truth}))
        if args.cleanlab_only:  # beside the cell's saved run and row, with its budget
            run = json.loads((work / "run" / "run.json").read_text())
            row = next(x for x in rows if (x["dataset"], x["cell"]) == (dataset, cell))
        else:
            lc = run_labelclean(data, work / "run", args.threads,
                                tuple(args.labelclean_args.split()))
            p, r, f = score(lc["flagged"], truth)
            run = lc["run"]
            row = {"dataset": dataset, "cell": cell, "n": len(truth),
                   "true_noise": float(np.mean(list(truth.values()))),
                   "f1": f, "precision": p, "recall": r,
                   "flagged_share": len(lc["flagged"]) / len(truth),
                   "verdict": run["verdict"]["status"], "t_c": run["t_c"],
                   "epochs": run["timing"]["epochs_trained"], "model": run["params"]["model"],
                   "wall_s": lc["wall"]}
        skip = args.no_cleanlab or (args.cleanlab_if_flagged and row["verdict"] != "flagged")
        if not skip:
            flagged, wall = run_cleanlab(data, run, args.threads)
            row.update({"cleanlab_f1": score(flagged, truth)[2], "cleanlab_wall_s": wall})
        else:  # keep an earlier cleanlab result that had the same per-fold budget
            old = [x for x in rows if (x["dataset"], x["cell"]) == (dataset, cell)
                   and x.get("epochs") == row["epochs"] and "cleanlab_f1" in x]
            row.update({k: old[0][k] for k in ("cleanlab_f1", "cleanlab_wall_s")} if old else {})
        print(row, flush=True)
        rows = [x for x in rows if (x["dataset"], x["cell"]) != (dataset, cell)] + [row]
        pd.DataFrame(rows).to_csv(table, index=False)
    if args.markdown:
        df = pd.DataFrame(rows)
        cols = [c for c in ("dataset", "cell", "n", "true_noise", "f1", "precision", "recall",
                            "flagged_share", "verdict", "t_c", "epochs", "wall_s", "cleanlab_f1",
                            "cleanlab_wall_s") if c in df]
        args.markdown.write_text(markdown(df[cols]))


if __name__ == "__main__":
    main()
