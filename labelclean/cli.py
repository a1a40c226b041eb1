"""``labelclean`` command line: a thin shell over the Python API.

Every user-facing problem surfaces as :class:`~labelclean.errors.LabelcleanError`
and is printed as one line on stderr with exit status 2. Exit statuses, the same for
every command (docs/usage.md, "Exit status"): 0 done, 2 bad input or usage, 3 withheld
(:data:`~labelclean.decision.WITHHELD_EXIT_STATUS`: ``run``, ``run --nproc``, ``demo``,
``bench`` when every seed's run was), 130 interrupted.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import NoReturn

import click
from click.core import ParameterSource

from . import __version__, distributed
from .canaries import DEFAULT_SHARE
from .cleaner import (
    BASE_BATCH_SIZE,
    BASE_LR,
    DEFAULT_VERDICT,
    PRETRAINED_BASE_LR,
    VERDICT_RULES,
)
from .decision import (
    MIN_STEPS,
    PATIENCE_STEPS,
    SCORES,
    SUSPICIONS,
    WITHHELD_EXIT_STATUS,
    Verdict,
)
from .errors import LabelcleanError, WithheldWarning
from .models import DEFAULT_FEATURE_MODEL, DEFAULT_IMAGE_MODEL, DEFAULT_RGB_MODEL
from .observers import PROBE_BUDGET
from .summary import print_summary, withheld_paragraph

_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class _Group(click.Group):
    """Turns LabelcleanError (and a few OS errors) into one line and exit 2."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # the command line as given, for `run --nproc` to hand on to torchrun
        ctx.meta["labelclean.args"] = list(args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except LabelcleanError as e:
            click.echo(f"labelclean: error: {e}", err=True)
            _exit(2)
        except OSError as e:
            # A full disk (ENOSPC), a read-only filesystem (EROFS), a permission
            # problem...: the user's to fix, so one line, not a traceback.
            click.echo(f"labelclean: error: {_os_error_line(e)}", err=True)
            _exit(2)
        except KeyboardInterrupt:
            click.echo("labelclean: interrupted", err=True)
            sys.exit(130)


def _exit(status: int) -> NoReturn:
    """Exit with ``status``; on rank 0 of a ``run --nproc`` job, first leave it for the
    launcher, which exits with it (torchrun turns any failed child into 1)."""
    distributed.record_status(status)
    sys.exit(status)


def _withheld_exit(verdict: Verdict) -> None:
    """Say why a withheld run flagged nothing, and exit 3 (unless its flags were forced)."""
    click.echo(withheld_paragraph(verdict), err=True)
    if verdict.forced:
        return
    if distributed.record_status(WITHHELD_EXIT_STATUS):
        return  # under `run --nproc`: the launcher exits 3; torchrun sees no failed rank
    sys.exit(WITHHELD_EXIT_STATUS)


def _os_error_line(e: OSError) -> str:
    what = e.strerror or str(e) or type(e).__name__
    return f"{what}: {e.filename}" if e.filename else what


_LINK_HELP = ("How cleaned/ refers to the input images: copy (copy-on-write clones where the "
              "filesystem supports them), or hardlink/symlink, which share the input's files: "
              "editing an image in cleaned/ then edits your original.")


@click.group(cls=_Group, context_settings=_SETTINGS)
@click.version_option(__version__, prog_name="labelclean")
def main() -> None:
    """Find mislabelled samples with one early-stopped SGD run (Feng & Tu 2021)."""


def auto_or_int(ctx: click.Context, param: click.Parameter, value: str | int) -> str | int:
    if value == "auto" or isinstance(value, int):
        return value
    try:
        return int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither 'auto' nor an integer") from None


def training_options(f):
    """The options of every setting of :class:`~labelclean.Cleaner`, each named as its
    keyword (``--max-epochs`` sets ``max_epochs``); their defaults are the keywords'
    (tests/test_config.py fails when the two drift apart)."""
    options = [
        click.option("--model", default=None,
                     help="A timm model name, cnn:w1,w2,... (a small CNN of those widths) or "
                     f"mlp:w1,w2,... [default: {DEFAULT_RGB_MODEL} for colour images, "
                     f"{DEFAULT_IMAGE_MODEL} for single-channel images, "
                     f"{DEFAULT_FEATURE_MODEL} for features]"),
        click.option("--pretrained", is_flag=True,
                     help="Start from timm's pretrained weights (downloaded; a timm --model). "
                     "Images are resized to the model's pretrained input size."),
        click.option("--weights", type=click.Path(path_type=Path), default=None,
                     help="Start from this file of timm weights instead (a state_dict saved "
                     "with torch.save or safetensors, of --model's architecture); implies "
                     "--pretrained, needs no network."),
        click.option("--max-epochs", "--epochs", "max_epochs", default="auto", show_default=True,
                     callback=auto_or_int,
                     help="Most epochs to train (auto: 30, or 3,000 SGD steps on small sets)."),
        click.option("--patience", type=int, default=5, show_default=True,
                     help="Stop this many epochs after the last phase-II improvement "
                     "(at least --patience-steps SGD steps)."),
        click.option("--min-steps", type=int, default=MIN_STEPS, show_default=True,
                     help="No t_c before this many SGD steps (learn before deciding)."),
        click.option("--patience-steps", type=int, default=PATIENCE_STEPS, show_default=True,
                     help="Patience covers at least this many SGD steps."),
        click.option("--lr", type=float, default=None,
                     help=f"SGD learning rate [default: {BASE_LR} x batch size / "
                     f"{BASE_BATCH_SIZE}; pretrained: {PRETRAINED_BASE_LR} x batch size / "
                     f"{BASE_BATCH_SIZE}]."),
        click.option("--momentum", type=float, default=0.9, show_default=True,
                     help="SGD momentum."),
        click.option("--weight-decay", type=float, default=5e-4, show_default=True,
                     help="SGD weight decay (L2)."),
        click.option("--batch-size", default="auto", show_default=True, callback=auto_or_int,
                     help="Minibatch size (auto: about 50 steps an epoch, 32 to 128)."),
        click.option("--augment", type=click.Choice(["auto", "none", "shift", "shift-flip"]),
                     default="auto", show_default=True,
                     help="Training augmentation (auto: shift-flip for colour images, none "
                     "otherwise); losses and margins always come from un-augmented images."),
        click.option("--score", type=click.Choice(SCORES), default="separation",
                     show_default=True, help="What the phase-II detector maximises."),
        click.option("--suspicion", type=click.Choice(SUSPICIONS),
                     default="aum", show_default=True,
                     help="Per-sample score the flags are read from: minus the mean margin "
                     "over epochs since every class was learned (AUM < 0 flagged), the "
                     "windowed loss (the paper's, "
                     "flagged above l_c) or its log. See docs/phases.md."),
        click.option("--window", type=int, default=3, show_default=True,
                     help="Average each sample's loss over this many epochs (1: the paper)."),
        click.option("--loss-pass", type=click.Choice(["eval", "train"]), default="eval",
                     show_default=True, help="Per-sample losses from an eval pass after each "
                     "epoch (the paper's), or free from the training pass."),
        click.option("--seed", type=int, default=0, show_default=True,
                     help="Seed of the run's randomness (weights, sample order, canaries): "
                     "the same seed on the same device gives the same flags. bench: the one "
                     "seed to run, as --seeds N."),
        click.option("--device", default="auto", show_default=True,
                     help="auto, cpu, cuda or cuda:N."),
        click.option("--amp", is_flag=True, default=None,
                     help="bf16 autocast on CUDA (off by default: see docs/performance.md)."),
        click.option("--kind", type=click.Choice(["auto", "folder", "paths", "features"]),
                     default="auto", show_default=True, help="Force the input kind."),
        click.option("--path-column", default="path", show_default=True,
                     help="A CSV's column of image paths."),
        click.option("--label-column", default="label", show_default=True,
                     help="A CSV's column of given labels."),
        click.option("--noise-column", default=None,
                     help="CSV column of trusted 0/1 wrong-label marks (research only)."),
        click.option("--image-size", type=int, default=None,
                     help="Resize images to this square side [default: native up to 64 px]."),
        click.option("--cache", type=click.Path(path_type=Path), default=None,
                     help="Folder to keep decoded images in between runs (outside the input "
                     "and --out); a rerun over unchanged files skips decoding. Needed for "
                     "images over --max-memory."),
        click.option("--max-memory", type=float, default=None,
                     callback=lambda ctx, param, v: None if v is None else int(v * 2**30),
                     help="GiB the decoded images may take in memory [default: a quarter "
                     "of RAM]; larger inputs are decoded once into --cache and "
                     "memory-mapped."),
        click.option("--workers", default="auto", show_default=True, callback=auto_or_int,
                     help="DataLoader processes gathering batches of memory-mapped images "
                     "(auto: 0 in memory, up to 4 mapped)."),
        click.option("--compile", is_flag=True,
                     help="torch.compile the forward passes (measure first: docs/performance.md)."),
        click.option("--skip-unreadable", is_flag=True,
                     help="Leave undecodable images out (listed in the report) "
                     "instead of stopping."),
        click.option("--probe-every", default="auto", show_default=True, callback=auto_or_int,
                     help="Estimate order parameters every N epochs (0: off; auto: as often "
                     f"as keeps the probe under {PROBE_BUDGET:.0%} of training time)."),
        click.option("--probe-batches", type=int, default=None,
                     help="Minibatch gradients per order-parameter probe (K)."),
        click.option("--spectrum", is_flag=True, help="Also estimate the noise spectrum's D_s."),
        click.option("--verdict", type=click.Choice(VERDICT_RULES), default=DEFAULT_VERDICT,
                     show_default=True,
                     help="How the run decides to write its flags: the flags' estimated "
                          "precision per class (from canaries), or 0.7's withholding rules."),
        click.option("--canaries", default="auto", show_default=True,
                     help=f"Known-wrong canaries per sample ('auto': {DEFAULT_SHARE} with "
                          "--verdict estimate, else 0): samples held out under their labels "
                          "and trained on under wrong ones, from which the run estimates "
                          "its flags' precision (run.json's 'estimate')."),
        click.option("--force-flags", is_flag=True,
                     help="Write the flags even when the run is withheld (marked as forced)."),
        click.option("--embeddings/--no-embeddings", default=True, show_default=True,
                     help="Write embeddings.npy, the penultimate features at t_c "
                     "(N x D floats; turn off for very large sets)."),
        click.option("--tensorboard-dir", "--tensorboard", "tensorboard_dir",
                     type=click.Path(path_type=Path), default=None,
                     help="Also log the per-epoch metrics, mixture and order parameters "
                     "to this TensorBoard folder (needs the tensorboard package)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


@main.command(context_settings=_SETTINGS)
@click.argument("data", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Folder for every output (must be empty or absent).")
@click.option("--val", type=click.Path(path_type=Path), default=None,
              help="Validation data with trusted labels (same formats).")
@click.option("--link", type=click.Choice(["copy", "hardlink", "symlink"]), default="copy",
              show_default=True, help=_LINK_HELP)
@click.option("--overwrite", is_flag=True, help="Replace a previous run in --out (only the "
              "files labelclean wrote there go, once the new run is complete).")
@click.option("--nproc", type=click.IntRange(min=1), default=1, show_default=True,
              help="Train with this many processes on this machine (torchrun --standalone; "
              "one per GPU, gloo on CPUs). See docs/distributed.md.")
@click.option("--resume", is_flag=True, help="Continue the run a crash or kill interrupted "
              "in --out (same DATA and options), from the last finished epoch; without one, "
              "start afresh.")
@training_options
def run(data: Path, out: Path, val: Path | None, link: str, overwrite: bool, nproc: int,
        resume: bool, **kw) -> None:
    """Train on DATA, find phase II, and write the cleaned dataset to --out.

    DATA is an image folder (root/<class>/<image>), a CSV of path,label, or a
    CSV of numeric features plus a label column.
    """
    from . import rundir
    from .cleaner import Cleaner
    from .export import export_result
    from .paths import check_input
    from .sources import listed_images
    from .writers import image_roots

    Cleaner(**kw).validate()  # every setting, before any input is read
    inputs = [data] + ([val] if val else [])
    for path in inputs:  # before --out is touched
        check_input(path)  # a file or a folder (labelclean.paths), not a pipe
    cache = kw.get("cache")
    if cache is not None and (out.resolve() == cache.resolve()
                              or out.resolve() in cache.resolve().parents):
        raise LabelcleanError(f"--cache {cache} lies inside --out {out}; put it elsewhere")
    if nproc > 1:
        if distributed.launched():
            raise LabelcleanError("--nproc starts torchrun itself; leave it out under torchrun")
        args = click.get_current_context().meta.get("labelclean.args")
        if not args:
            raise LabelcleanError("--nproc needs the command line (run it from a shell)")
        sys.exit(distributed.relaunch(nproc, args))
    if not distributed.is_main_process():
        # Another rank of a torchrun job: it trains its share; rank 0 writes --out.
        Cleaner(progress=False, **kw).fit(data, val=val, resume=resume)
        # Leave at once: torch's exit-time destructors, run while rank 0 still writes,
        # now and then abort this rank ("terminate called without an active exception"),
        # and torchrun then kills rank 0 before it has written --out or its exit status.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    forbidden = list(inputs)
    for path in inputs:
        images = listed_images(path, kw["kind"], kw["path_column"])
        forbidden += image_roots(images) if images else []
    # The staging folder beside --out is opened before training: an unwritable
    # place fails now, not after an hour of it.
    staging = rundir.begin(out, kind="run", overwrite=overwrite, inputs=forbidden,
                           resume=resume)
    with staging:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", WithheldWarning)  # said below, in full
            result = Cleaner(progress="auto", **kw).fit(
                data, val=val, state_dir=staging.state_dir, resume=resume)
        export_result(result, out, link=link, staging=staging)
    print_summary(result, out)
    if result.verdict.withheld:
        _withheld_exit(result.verdict)


@main.command(context_settings=_SETTINGS)
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Folder for the demo data and the run.")
@click.option("--noise", type=float, default=0.2, show_default=True,
              help="Fraction of labels to corrupt.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the wrong labels and of the run.")
@click.option("--overwrite", is_flag=True, help="Replace a previous demo in --out.")
def demo(out: Path, noise: float, seed: int, overwrite: bool) -> None:
    """Clean scikit-learn's digits with known injected noise; print precision and recall.

    Exits 3, as run does, when the run is withheld.
    """
    from .demo import run_demo

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", WithheldWarning)  # said below, in full
        summary = run_demo(out, noise=noise, seed=seed, overwrite=overwrite, echo=click.echo)
    verdict = summary["verdict"]
    if verdict["status"] == "withheld":
        _withheld_exit(Verdict(verdict["status"], verdict["reason"], verdict["advice"],
                               verdict["forced"]))


@main.command("report", context_settings=_SETTINGS)
@click.argument("run_dir", type=click.Path(path_type=Path))
def report_command(run_dir: Path) -> None:
    """Rebuild RUN_DIR/report.html and RUN_DIR/figures/ from the run's files."""
    from .report import write_report

    click.echo(f"report written to {write_report(run_dir)}")


@main.command("apply", context_settings=_SETTINGS)
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--review", type=click.Path(path_type=Path), default=None,
              help="Edited copy of flagged_samples.csv [default: the run's own].")
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Folder for the final dataset (must be empty or absent).")
@click.option("--link", type=click.Choice(["copy", "hardlink", "symlink"]), default="copy",
              show_default=True, help=_LINK_HELP)
@click.option("--overwrite", is_flag=True, help="Replace a previous apply output in --out "
              "(only the files labelclean wrote there go).")
def apply_command(
    run_dir: Path, review: Path | None, out: Path, link: str, overwrite: bool
) -> None:
    """Write the final dataset of RUN_DIR, following the `action` column of its review.

    Per flagged sample: remove (default), keep, or relabel:<class>. Unflagged
    samples are always kept.
    """
    from .review import apply_review

    s = apply_review(run_dir, out, review_csv=review, link=link, overwrite=overwrite)
    click.echo(f"removed {s['removed']}, kept {s['kept_flagged']}, relabelled {s['relabelled']} "
               f"of {s['flagged']} flagged; {s['final_samples']} samples in {s['out']}/"
               f"{s['dataset']} (log: apply_log.csv)")




# ---------------------------------------------------------------- bench (issue 5)


@main.command("bench", context_settings=_SETTINGS)
@click.argument("data", type=click.Path(path_type=Path))
@click.argument("more_seeds", nargs=-1, type=int, metavar="")
@click.option("--noise", type=click.Choice(["symmetric", "pairflip", "classdep"]),
              default="symmetric", show_default=True, help="How labels are corrupted.")
@click.option("--rate", type=float, default=0.2, show_default=True,
              help="Fraction of labels to corrupt.")
@click.option("--seeds", type=int, multiple=True, default=(0, 1, 2), show_default=True,
              help="Noise and training seeds (repeat the option, or list them: --seeds 0 1 2).")
@click.option("--retrain", is_flag=True,
              help="Also report a_n, a_c, a_p and Q on --test (three more trainings per seed).")
@click.option("--test", type=click.Path(path_type=Path), default=None,
              help="Held-out test data with trusted labels (for --retrain).")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Folder for bench.csv and the per-seed flags (must be empty or absent).")
@click.option("--overwrite", is_flag=True, help="Replace a previous bench in --out.")
@training_options
def bench_command(data: Path, more_seeds: tuple[int, ...], noise: str, rate: float,
                  seeds: tuple[int, ...], retrain: bool, test: Path | None, out: Path | None,
                  overwrite: bool, **kw) -> None:
    """Corrupt DATA's trusted labels, clean them, and score the flags against the truth.

    Prints precision, recall, F1, AUROC, estimated vs true noise rate, t_c, the
    oracle (best epoch with the truth), wall and CPU time per seed. Exits 3 when
    every seed's run was withheld.
    """
    from .bench import format_table, run_bench

    ctx = click.get_current_context()
    seed = kw.pop("seed")
    if ctx.get_parameter_source("seed") is not ParameterSource.DEFAULT:
        if ctx.get_parameter_source("seeds") is not ParameterSource.DEFAULT or more_seeds:
            raise LabelcleanError("give --seed N (one seed) or --seeds (several), not both")
        seeds = (seed,)
    seeds = tuple(dict.fromkeys(seeds + more_seeds))  # "--seeds 0 1 2" as well as repeated
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", WithheldWarning)  # said below, per seed
        df = run_bench(data, noise=noise, rate=rate, seeds=list(seeds), retrain=retrain,
                       test=test, out=out, overwrite=overwrite, echo=click.echo, **kw)
    click.echo(format_table(df))
    if out is not None:
        click.echo(f"written {out}/bench.csv")
    withheld = df.loc[df["verdict"] == "withheld", "seed"].tolist()
    if withheld:
        every = len(withheld) == len(df)
        click.echo(f"labelclean: withheld: the run{'s' if len(withheld) > 1 else ''} of seed"
                   f"{'s' if len(withheld) > 1 else ''} {', '.join(map(str, withheld))} "
                   "flagged nothing (its scores still count above)"
                   + (f"; every seed's run was withheld (exit status {WITHHELD_EXIT_STATUS})"
                      if every else ""), err=True)
        if every:
            _exit(WITHHELD_EXIT_STATUS)


if __name__ == "__main__":  # pragma: no cover
    main()
