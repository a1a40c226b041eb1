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

from . import distributed
from ._version import __version__
from .decision import WITHHELD_EXIT_STATUS, Verdict
from .errors import LabelcleanError, WithheldWarning
from .settings import DEFAULTS, SPECS
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


def _gib(ctx: click.Context, param: click.Parameter, value: float | None) -> int | None:
    """A number of GiB as bytes."""
    return None if value is None else int(value * 2**30)


def setting_option(name: str):
    """The click option of the setting ``name``, from its declaration in
    :class:`~labelclean.settings.Settings`: ``--the-name`` (plus its aliases), its
    default and help text, and the type its :class:`~labelclean.settings.Setting`
    names."""
    spec = SPECS[name]
    default = getattr(DEFAULTS, name)
    dashed = name.replace("_", "-")
    decls = [f"--{dashed}", *spec.aliases] + ([name] if spec.aliases else [])
    kw: dict = {"help": spec.help}
    if spec.option == "flag":
        kw["is_flag"] = True
        if default is not False:  # amp: None, "not given"
            kw["default"] = default
        return click.option(*decls, **kw)
    if spec.option == "switch":
        decls = [f"--{dashed}/--no-{dashed}"]
    kw["default"] = default
    if default is not None:
        kw["show_default"] = True
    if spec.option == "int":
        kw["type"] = int
    elif spec.option == "float":
        kw["type"] = float
    elif spec.option == "choice":
        kw["type"] = click.Choice(spec.choices)
    elif spec.option == "path":
        kw["type"] = click.Path(path_type=Path)
    elif spec.option == "auto_int":
        kw["callback"] = auto_or_int
    elif spec.option == "gib":
        kw["type"] = float
        kw["callback"] = _gib
    return click.option(*decls, **kw)


def training_options(f):
    """The options of every setting of :class:`~labelclean.Cleaner`, each named as its
    keyword (``--max-epochs`` sets ``max_epochs``), built from
    :class:`~labelclean.settings.Settings` in its field order (settings of Python
    objects only have none); tests/test_config.py holds the two together."""
    for name, spec in reversed(SPECS.items()):
        if spec.option is not None:
            f = setting_option(name)(f)
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
    from .formats import input_footprint
    from .paths import check_input, within

    Cleaner(**kw).validate()  # every setting, before any input is read
    inputs = [data] + ([val] if val else [])
    for path in inputs:  # before --out is touched
        check_input(path)  # a file or a folder (labelclean.paths), not a pipe
    cache = kw.get("cache")
    if cache is not None and within(cache, out):
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
    # what the run's folders may not overlap: each input as its format sees it
    # (a CSV of paths: also its images' folder), known before it is read
    forbidden = [p for path in inputs
                 for p in input_footprint(path, kw["kind"], path_column=kw["path_column"])]
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
