"""Calibration: the run's own estimate of its flags against the truth, cell by cell.

For each cell (``dataset:labels``) this writes the data as a user would have it
(studies/zoo.py's cells, plus independent 10,000-image draws of CIFAR-10N from
``../shared/datasets/cifar10n_pool``: ``cifar10n-pool1:worse`` ...), runs
``Cleaner`` with every default, and appends one JSON record to
``--out/calibration.jsonl``: the verdict, F1 / precision / recall of the flags
written and of every flag the rule would give at ``t_c`` (``*_would``, what
``--force-flags`` writes), the estimate (precision, recall, wrong-label share,
with their intervals) beside the true values, per class too, and the version,
commit, command and machine.

    python studies/calibration.py digits:sym0.2 cifar10n:worse cifar10n-pool1:worse \\
        --out bench_out/calibration --threads 2
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from zoo import SHARED, write_cell  # noqa: E402

from labelclean import Cleaner, __version__  # noqa: E402
from labelclean.noise import precision_recall_f1  # noqa: E402

POOL_DRAW = 10_000


def write_pool_draw(draw: int, labels: str, root: Path) -> tuple[Path, dict[str, bool]]:
    """10,000 images of ``cifar10n_pool`` (draw ``draw``: a seeded sample without
    replacement; draws 1-3 are disjoint) under the label set ``labels``, as a path CSV."""
    base = (SHARED / "cifar10n_pool").resolve()
    table = pd.read_csv(base / "labels.csv")
    order = np.random.default_rng(2026).permutation(len(table))
    part = table.iloc[np.sort(order[(draw - 1) * POOL_DRAW: draw * POOL_DRAW])]
    root.mkdir(parents=True, exist_ok=True)
    csv = root / "labels.csv"
    pd.DataFrame({"path": [str(base / p) for p in part["path"]],
                  "label": part[labels]}).to_csv(csv, index=False)
    return csv, {str(base / p): bool(g != c)
                 for p, g, c in zip(part["path"], part[labels], part["clean"])}


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=Path(__file__).parent).stdout.strip()
    except OSError:
        return ""


#: The commit the code that runs was read from (taken at start: a later commit would
#: mislabel the record).
COMMIT = commit()


def true_precision_by_class(flags: np.ndarray, wrong: np.ndarray, y: np.ndarray,
                            classes: list[str]) -> dict[str, float | None]:
    out = {}
    for i, name in enumerate(classes):
        f = flags & (y == i)
        out[str(name)] = float(wrong[f].mean()) if f.any() else None
    return out


def cifar_clean_labels() -> dict[str, str]:
    """``{absolute image path: clean class}`` of every CIFAR-10N image on hand."""
    out: dict[str, str] = {}
    for name in ("cifar10n_dev", "cifar10n_pool"):
        base = (SHARED / name).resolve()
        if (base / "labels.csv").exists():
            table = pd.read_csv(base / "labels.csv")
            out.update({str(base / p): c for p, c in zip(table["path"], table["clean"])})
    return out


def accuracy_clean(result, ids) -> float | None:
    """How often the model at ``t_c`` predicts the clean class (CIFAR-10N cells only)."""
    if result.pred_probs is None or not str(ids[0]).endswith(".jpg"):
        return None
    clean = cifar_clean_labels()
    if not all(str(i) in clean for i in ids):
        return None
    classes = np.asarray(result.dataset.classes)
    pred = classes[result.pred_probs.argmax(1)]
    return float(np.mean([p == clean[str(i)] for p, i in zip(pred, ids)]))


def learned_tests(history: pd.DataFrame) -> list[dict]:
    """Per epoch: the AUC's z and the Kolmogorov-Smirnov p of canaries against samples."""
    cols = [c for c in ("epoch", "est_auc_z", "est_shift_p", "eval_accuracy") if c in history]
    if "est_auc_z" not in cols:
        return []
    rows = history[cols].dropna(subset=["est_auc_z"])
    return [{k: float(v) for k, v in r.items()} for r in rows.to_dict("records")]


def run_cell(spec: str, out: Path, seed: int, extra: dict) -> dict:
    dataset, labels = spec.split(":")
    work = out / f"{dataset}_{labels}"
    if dataset.startswith("cifar10n-pool"):
        data, truth = write_pool_draw(int(dataset[len("cifar10n-pool"):]), labels, work)
    else:
        data, truth = write_cell(dataset, labels, work)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = Cleaner(seed=seed, progress=False, **extra).fit(data)
    wall = time.perf_counter() - t0
    ids = result.dataset.ids
    wrong = np.array([truth[str(i)] for i in ids])
    scores = result.scores.sort_values("index")
    written = scores["flagged"].to_numpy()
    s = scores["score"].to_numpy()
    cut = 0.0 if result.params["suspicion"] == "aum" else result.mixture.threshold
    would = s > cut
    est = result.estimate
    p, r, f = precision_recall_f1(written, wrong)
    pw, rw, fw = precision_recall_f1(would, wrong)
    record = {
        "cell": spec, "dataset": dataset, "labels": labels, "seed": seed,
        "samples": len(ids), "true_noise": float(wrong.mean()),
        "verdict": result.verdict.status, "reason": result.verdict.reason,
        "classes_held": result.verdict.classes_held, "t_c": result.t_c,
        "epochs": result.timing["epochs_trained"], "model": result.params["model"],
        "f1": f, "precision": p, "recall": r, "flagged_share": float(written.mean()),
        "f1_would": fw, "precision_would": pw, "recall_would": rw,
        "estimate": None if est is None else est.to_dict(),
        "true_precision_by_class": true_precision_by_class(
            would, wrong, result.dataset.y, list(result.dataset.classes)),
        "accuracy_clean_at_t_c": accuracy_clean(result, ids), "wall_s": wall,
        # the canaries-against-samples tests of every epoch, for the learnability rule
        "learned_tests": learned_tests(result.history),
        "batch_size": result.params["batch_size"], "lr": result.params["lr"],
        "version": __version__, "commit": COMMIT, "machine": platform.machine(),
        "threads": torch.get_num_threads(), "device": result.params["device"],
        "verdict_rule": extra.get("verdict", "rules"),
        "command": (f"python studies/calibration.py {spec} --seed {seed} "
                    f"--verdict {extra.get('verdict', 'rules')}"),
    }
    # every epoch's margins and metrics (aum_from, est_precision, est_recall ...), for
    # studies of other t_c rules offline
    result.history.to_csv(work / f"history_seed{seed}.csv", index=False)
    np.savez_compressed(work / f"margins_seed{seed}.npz", margins=result.margins.astype(np.float16),
                        wrong=wrong, y=result.dataset.y)
    # the arrays the estimate came from, for studies of other estimators offline
    if result.estimate is not None and result.canary_scores is not None:
        np.savez_compressed(work / f"estimate_inputs_seed{seed}.npz",
                            scores=s, wrong=wrong, y=result.dataset.y,
                            held_out=result.held_out, canary_scores=result.canary_scores,
                            canary_y=result.canary_y)
    return record


def table(records: list[dict]) -> str:
    """The calibration table (markdown): estimated against true precision of every flag
    the rule gives at ``t_c``, and estimated against true wrong-label share."""
    head = ("| cell | seed | verdict | F1 written | F1 at t_c (all flags) | precision at t_c | "
            "estimated (90% interval) | wrong share | estimated (90% interval) | version, "
            "commit | command |")
    lines = [head, "|" + "---|" * 11]
    for r in records:
        e = r["estimate"] or {}
        p, n = e.get("precision", {}), e.get("noise_share", {})

        def iv(d: dict) -> str:
            return f"{d['value']:.2f} [{d['low']:.2f}, {d['high']:.2f}]" if d else "-"

        lines.append(
            f"| {r['cell']} | {r['seed']} | {r['verdict']} | {r['f1']:.3f} | "
            f"{r['f1_would']:.3f} | {r['precision_would']:.3f} | {iv(p)} | "
            f"{r['true_noise']:.3f} | {iv(n)} | {r['version']}, {r['commit']} | "
            f"`{r['command']}` |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("cells", nargs="*")
    ap.add_argument("--table", type=Path, default=None,
                    help="print the markdown table of the records in this .jsonl and exit")
    ap.add_argument("--out", type=Path, default=Path("bench_out/calibration"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--verdict", default="estimate", help="Cleaner(verdict=...)")
    args = ap.parse_args()
    if args.table:
        print(table([json.loads(line) for line in args.table.read_text().splitlines()]), end="")
        return
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    for spec in args.cells:
        record = run_cell(spec, args.out, args.seed, {"verdict": args.verdict})
        est = record["estimate"] or {}
        print(f"{spec}: {record['verdict']}, F1 {record['f1']:.3f} "
              f"(would {record['f1_would']:.3f}),"
              f" precision would {record['precision_would']:.3f} vs est "
              f"{est.get('precision')}, noise {record['true_noise']:.3f} vs est "
              f"{est.get('noise_share')}, {record['wall_s']:.0f} s", flush=True)
        with open(args.out / "calibration.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
