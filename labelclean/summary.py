"""What ``labelclean run`` (and the demo) print when a run is done."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .decision import WITHHELD_EXIT_STATUS, Verdict
from .suspicions import get_suspicion

if TYPE_CHECKING:
    from .resultdata import ResultData


def _class_shares(shares: dict[str, float], most: int = 10) -> str:
    """The classes with the largest flagged shares first, at most ``most`` of them."""
    top = sorted(shares.items(), key=lambda kv: -kv[1])
    text = ", ".join(f"{c} {100 * s:.0f}%" for c, s in top[:most])
    return text + (f", ... ({len(top) - most} more)" if len(top) > most else "")


def withheld_paragraph(verdict: Verdict) -> str:
    """What stderr says about a withheld run: the cause and what to try."""
    head = ("labelclean: the flags were written anyway (--force-flags), but the run is NOT "
            "convincing:" if verdict.forced else
            "labelclean: withheld: nothing was flagged, because the run is not convincing:")
    body = f"{head} {verdict.reason}. Try: {verdict.advice}."
    if not verdict.forced:
        body += f" (exit status {WITHHELD_EXIT_STATUS})"
    return textwrap.fill(body, width=100)


def print_summary(result: ResultData, out: Path) -> None:
    n = len(result.scores)
    m = result.mixture
    suspicion = get_suspicion(str(result.params.get("suspicion")),
                              int(result.params.get("window") or 3))
    if suspicion is not None:
        rule = suspicion.summary_rule(m)
    else:
        rule = f"delta_L {m.delta_L:.2f}, l_c {m.threshold:.2f}"
    shares = result.flagged_share_by_class()
    lines = [
        f"verdict            {result.verdict}",
        f"samples            {n}",
        f"flagged            {result.n_flagged} ({100 * result.estimated_noise_rate:.1f}%)",
        "flagged by class   " + _class_shares(shares),
        f"t_c                epoch {result.t_c} of {result.timing['epochs_trained']} trained"
        f"  ({rule})",
    ]
    est = result.estimate
    if est is not None:
        lines += [
            f"est. precision     {est.precision} of the flags at t_c (90% interval, "
            f"from {est.canaries} canaries)",
            f"est. wrong labels  {est.noise_share} of the samples; "
            f"{est.residual_share} of those kept",
        ]
    if result.phase_boundaries:
        spans = ", ".join(f"{k} {a}-{b}" for k, (a, b) in result.phase_boundaries.items())
        lines.append(f"phases             {spans}")
    if len(result.dataset.unreadable):
        lines.append(f"unreadable images  {len(result.dataset.unreadable)} (see unreadable.csv)")
    if result.val is not None and "val_accuracy" in result.history:
        acc = result.history.loc[result.history.epoch == result.t_c, "val_accuracy"].iloc[0]
        lines.append(f"val accuracy @t_c  {acc:.4f}")
    seconds, device = result.timing["total_seconds"], result.params["device"]
    lines.append(f"time               {seconds:.1f} s on {device}")
    if result.dataset.origin == "folder" and Path(result.dataset.source).name == "train":
        val = f", validated on {result.val.source}" if result.val is not None else ""
        lines.append(f"trained on         {result.dataset.source}{val}")
    lines.append(f"outputs            {out}/ (flagged_samples.csv, pred_probs.npy, report.html, "
                 "checkpoint/)")
    click.echo("\n".join(lines))
