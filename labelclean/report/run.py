"""The run as the report sees it: the one reader's :class:`~labelclean.runfiles.RunFolder`
plus how its suspicion score and flag rule are put into words."""

from __future__ import annotations

import os

import numpy as np

from ..runfiles import RunFolder, read_run


class RunFiles(RunFolder):
    """A run folder (read by :func:`labelclean.runfiles.read_run`) with the
    report's wording of what its scores are and how they flagged."""

    @property
    def windowed(self) -> bool:
        """Whether the suspicion averages the loss over more than one epoch."""
        return self.suspicion in ("loss", "logloss") and self.window > 1

    @property
    def quantity(self) -> str:
        """What the mixture at t_c was fitted to, for axis labels."""
        return self.quantity_at("t_c")

    def quantity_at(self, epoch: str, short: bool = False) -> str:
        """What the mixture at epoch ``epoch`` (``"t_c"``, or ``"t"`` for figures
        over epochs) was fitted to, in words; ``short`` for a narrow axis."""
        kind, w = self.suspicion, self.window
        if kind == "aum":
            if short:
                return f"suspicion score (−AUM over epochs 1..{epoch})"
            return f"suspicion score (minus the area under the margin over epochs 1..{epoch})"
        if kind == "logloss":
            what = "the per-sample loss" if w == 1 else f"the loss averaged over {w} epochs"
            if short:
                what = "loss" if w == 1 else f"loss over {w} epochs"
            return f"suspicion score (log of {what})"
        if kind == "loss":
            if w == 1:
                return "per-sample loss"
            return f"suspicion score (loss averaged over {w} epochs)"
        return f"suspicion score ({kind})"

    @property
    def flag_cut(self) -> float:
        """Where the flags were cut, in the score's units: 0 for AUM (flagged when
        AUM < 0, i.e. score > 0), else the mixture's threshold ``l_c`` at t_c
        (NaN when run.json has none). Nothing is flagged, whatever the cut, when
        the run found no second population."""
        if self.suspicion == "aum":
            return 0.0
        mix = self.run.get("mixture_at_t_c") or {}
        try:
            return float(mix.get("threshold", np.nan))
        except (TypeError, ValueError):
            return float("nan")

    @property
    def flag_rule(self) -> str:
        """The flagging rule, in words."""
        if self.suspicion == "aum":
            return "flagged where AUM < 0, i.e. score > 0"
        return "flagged where the score is above the mixture's threshold l_c"


def load_run(run_dir: str | os.PathLike) -> RunFiles:
    """Read a run folder for the report (:func:`labelclean.runfiles.read_run`)."""
    return RunFiles.of(read_run(run_dir))
