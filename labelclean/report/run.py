"""The run as the report sees it: the one reader's :class:`~labelclean.runfiles.RunFolder`
plus how its suspicion score and flag rule are put into words."""

from __future__ import annotations

import os

import numpy as np

from ..runfiles import RunFolder, read_run
from ..suspicions import Suspicion, get_suspicion


class RunFiles(RunFolder):
    """A run folder (read by :func:`labelclean.runfiles.read_run`) with the
    report's wording of what its scores are and how they flagged."""

    @property
    def suspicion_spec(self) -> Suspicion | None:
        """The run's suspicion (:mod:`labelclean.suspicions`), None when this process
        has none registered under its name."""
        return get_suspicion(self.suspicion, self.window)

    @property
    def windowed(self) -> bool:
        """Whether the suspicion averages the loss over more than one epoch."""
        spec = self.suspicion_spec
        return spec is not None and spec.windowed()

    @property
    def quantity(self) -> str:
        """What the mixture at t_c was fitted to, for axis labels."""
        return self.quantity_at("t_c")

    def quantity_at(self, epoch: str, short: bool = False) -> str:
        """What the mixture at epoch ``epoch`` (``"t_c"``, or ``"t"`` for figures
        over epochs) was fitted to, in words; ``short`` for a narrow axis."""
        spec = self.suspicion_spec
        if spec is None:
            return f"suspicion score ({self.suspicion})"
        return spec.quantity(epoch, short)

    @property
    def flag_cut(self) -> float:
        """Where the flags were cut, in the score's units: 0 for AUM (flagged when
        AUM < 0, i.e. score > 0), else the mixture's threshold ``l_c`` at t_c
        (NaN when run.json has none). Nothing is flagged, whatever the cut, when
        the run found no second population."""
        spec = self.suspicion_spec
        if spec is not None and spec.fixed_cut is not None:
            return float(spec.fixed_cut)
        mix = self.run.get("mixture_at_t_c") or {}
        try:
            return float(mix.get("threshold", np.nan))
        except (TypeError, ValueError):
            return float("nan")

    @property
    def flag_rule(self) -> str:
        """The flagging rule, in words."""
        spec = self.suspicion_spec
        if spec is None:
            return "flagged where the score is above the mixture's threshold l_c"
        return spec.flag_rule()


def load_run(run_dir: str | os.PathLike) -> RunFiles:
    """Read a run folder for the report (:func:`labelclean.runfiles.read_run`)."""
    return RunFiles.of(read_run(run_dir))
