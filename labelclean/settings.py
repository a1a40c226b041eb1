"""Every setting of a run, declared once: :class:`Settings`.

One field per keyword of :class:`~labelclean.Cleaner` (same name, same default), each
with a :class:`Setting` in its metadata: the help text, the command-line option's kind
and extra names, the choices, the check :meth:`Settings.validate` runs, and whether a
resumed run may change it. From this one declaration come

- the command line's options (``cli.training_options`` builds one per field, in field
  order), and so the options tables of docs/usage.md (``labelclean.clidoc``);
- :meth:`Cleaner.validate <labelclean.Cleaner.validate>` (:meth:`Settings.validate`);
- resume's compatibility check (:func:`free_settings`: the settings that change no
  number of the run);
- what the parts of a run read: :meth:`Cleaner.settings <labelclean.Cleaner.settings>`
  hands the observers, the result and the export a frozen :class:`Settings`, never
  the ``Cleaner`` itself.

``tests/test_config.py`` holds the command line, ``Cleaner``'s keywords and these fields
to one another, defaults included. A new setting is a field here (with its
:class:`Setting`) and a keyword of ``Cleaner.__init__`` defaulting to it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_args

import numpy as np
import torch

from .canaries import DEFAULT_SHARE
from .checks import check_cleaner
from .dataset import SourceKind
from .decision import MIN_STEPS, PATIENCE_STEPS, SCORES, SUSPICIONS
from .errors import LabelcleanError
from .models import (
    DEFAULT_FEATURE_MODEL,
    DEFAULT_IMAGE_MODEL,
    DEFAULT_RGB_AUGMENT,
    DEFAULT_RGB_MODEL,
    RGB_RECIPE,
    check_pretrainable,
)
from .training import AUGMENTATIONS

#: The learning rate is set for this batch size and scaled linearly with the
#: batch size when ``lr`` is not given (Goyal et al. 2017's rule).
BASE_LR = 0.1
BASE_BATCH_SIZE = 128
#: The same rule's rate when starting from pretrained weights: fine-tuning takes
#: a tenth of the rate from scratch (the usual ImageNet fine-tuning practice),
#: which would otherwise wash out the pretrained features in the first epochs.
PRETRAINED_BASE_LR = 0.01
#: ``batch_size="auto"``: about this many SGD steps an epoch, within the bounds.
AUTO_STEPS_PER_EPOCH = 50
AUTO_BATCH_BOUNDS = (32, 128)
#: ``max_epochs="auto"``: at least this many epochs, and at least enough epochs
#: for ``MIN_TRAIN_STEPS`` SGD steps (a small set needs more epochs to learn),
#: but never more than ``MAX_AUTO_EPOCHS``.
DEFAULT_EPOCHS = 30
MIN_TRAIN_STEPS = 3000
MAX_AUTO_EPOCHS = 200
#: Share of training time the order-parameter probe may take with ``probe_every="auto"``.
PROBE_BUDGET = 0.05
#: Where the per-sample losses and margins come from (``Cleaner(loss_pass=...)``).
LOSS_PASSES = ("eval", "train")
#: How the verdict is reached (``Cleaner(verdict=...)``), and the default.
VERDICT_RULES = ("rules", "estimate")
DEFAULT_VERDICT = "estimate"

#: How a setting is given on the command line: ``text``, ``int``, ``float``, ``choice``
#: (one of ``choices``), ``flag`` (``--name`` turns it on), ``switch`` (``--name`` /
#: ``--no-name``), ``path``, ``auto_int`` (``auto`` or an integer), ``gib`` (a number
#: of GiB, passed on as bytes); ``None``: no option (a setting of Python objects only).
OptionKind = Literal["text", "int", "float", "choice", "flag", "switch", "path", "auto_int",
                     "gib"]


@dataclass(frozen=True)
class Setting:
    """What :class:`Settings` declares of one setting besides its name and default."""

    #: The help text, as ``labelclean run --help`` and docs/usage.md show it.
    help: str
    #: The option's kind (see :data:`OptionKind`); None: no command-line option.
    option: OptionKind | None = "text"
    #: More names of the option, after ``--the-name`` (``--epochs`` for ``--max-epochs``).
    aliases: tuple[str, ...] = ()
    #: The values it takes (``option="choice"``; also checked in Python).
    choices: tuple[Any, ...] = ()
    #: ``check(name, value)`` raises :class:`LabelcleanError` for a bad value.
    check: Callable[[str, Any], None] | None = None
    #: A resumed run may change it: it changes no number of the run.
    free: bool = False


def setting(default: Any, help: str, **kw: Any) -> Any:
    """A :class:`Settings` field: ``default`` and its :class:`Setting`."""
    if kw.get("choices") and "check" not in kw:
        kw["check"] = _choice(kw["choices"])
    return field(default=default, metadata={"setting": Setting(help, **kw)})


# ---------------------------------------------------------------------- checks


def _choice(choices: tuple) -> Callable[[str, Any], None]:
    def check(name: str, value: Any) -> None:
        if value not in choices:
            raise LabelcleanError(f"{name} must be one of {', '.join(map(str, choices))}, "
                                  f"got {value!r}")
    return check


def _registered(registry: dict) -> Callable[[str, Any], None]:
    """A choice among a registry's names as they are when checked (the option's
    choices are its names at import; one registered later is accepted from Python)."""
    def check(name: str, value: Any) -> None:
        _choice(tuple(registry))(name, value)
    return check


def parsed(value: Any, kind: type = int) -> Any:
    """``"2"`` or ``"0.05"`` (as the command line passes ``--workers`` or ``--canaries``)
    as ``kind``; anything else unchanged."""
    if isinstance(value, str):
        try:
            return kind(value)
        except ValueError:
            return value
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and \
        math.isfinite(value)


def integer(minimum: int | None, *, auto: bool = False, none: bool = False,
            from_text: bool = False) -> Callable[[str, Any], None]:
    """An integer ``>= minimum``; or ``"auto"`` (``auto``), or None (``none``); with
    ``from_text``, also an integer's text (``"2"``, as the command line passes it)."""
    alternatives = "'auto' or " if auto else "None or " if none else ""

    def check(name: str, value: Any) -> None:
        if (auto and value == "auto") or (none and value is None):
            return
        value = parsed(value) if from_text else value
        ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
        if not ok or (minimum is not None and value < minimum):
            bound = "an integer" if minimum is None else f"an integer >= {minimum}"
            raise LabelcleanError(f"{name} must be {alternatives}{bound}, got {value!r}")
    return check


def _lr(name: str, value: Any) -> None:
    if value is not None and not (_is_number(value) and value > 0):
        raise LabelcleanError(f"{name} must be positive, got {value!r}")


def _momentum(name: str, value: Any) -> None:
    if not (_is_number(value) and 0 <= value < 1):
        raise LabelcleanError(f"{name} must be in [0, 1), got {value!r}")


def _weight_decay(name: str, value: Any) -> None:
    if not (_is_number(value) and value >= 0):
        raise LabelcleanError(f"{name} must be >= 0, got {value!r}")


def _device(name: str, value: Any) -> None:
    if not isinstance(value, str):
        raise LabelcleanError(f"{name} must be a string, got {value!r}")
    if value != "auto":
        # its syntax only: whether it is there (and what "cuda" means under
        # torchrun) is distributed.setup's and the trainer's to say
        try:
            torch.device(value)
        except RuntimeError:
            raise LabelcleanError(f"unknown {name} {value!r}") from None


def _max_memory(name: str, value: Any) -> None:
    if value is not None and not (_is_number(value) and value > 0):
        raise LabelcleanError(f"{name} must be None or a positive number of bytes, "
                              f"got {value!r}")


def _canaries(name: str, value: Any) -> None:
    share = parsed(value, float)
    if value != "auto" and not (_is_number(share) and 0 <= share <= 0.5):
        raise LabelcleanError(f"{name} must be 'auto' or a share in [0, 0.5], got {value!r}")


def _progress(name: str, value: Any) -> None:
    if value not in (True, False, "auto"):
        raise LabelcleanError(f"{name} must be True, False or 'auto', got {value!r}")


# ---------------------------------------------------------------------- the schema


@dataclass(frozen=True)
class Settings:
    """The settings of one run (:class:`~labelclean.Cleaner`'s keywords; its docstring
    says what each does), frozen: what the parts of a run read. Fields are in the
    command line's order."""

    model: str | None = setting(
        None, "A timm model name, cnn:w1,w2,... (a small CNN of those widths) or "
        f"mlp:w1,w2,... [default: {DEFAULT_RGB_MODEL} for colour images, "
        f"{DEFAULT_IMAGE_MODEL} for single-channel images, {DEFAULT_FEATURE_MODEL} for "
        "features]")
    pretrained: bool = setting(
        False, "Start from timm's pretrained weights (downloaded; a timm --model). Images are "
        "resized to the model's pretrained input size.", option="flag")
    weights: str | None = setting(
        None, "Start from this file of timm weights instead (a state_dict saved with "
        "torch.save or safetensors, of --model's architecture); implies --pretrained, "
        "needs no network.", option="path")
    max_epochs: int | str = setting(
        "auto", f"Most epochs to train (auto: {DEFAULT_EPOCHS}, or {MIN_TRAIN_STEPS:,} SGD "
        "steps on small sets).", option="auto_int", aliases=("--epochs",),
        check=integer(1, auto=True))
    patience: int = setting(
        5, "Stop this many epochs after the last phase-II improvement (at least "
        "--patience-steps SGD steps).", option="int", check=integer(1))
    min_steps: int = setting(
        MIN_STEPS, "No t_c before this many SGD steps (learn before deciding).",
        option="int", check=integer(0))
    patience_steps: int = setting(
        PATIENCE_STEPS, "Patience covers at least this many SGD steps.", option="int",
        check=integer(0))
    lr: float | None = setting(
        None, f"SGD learning rate [default: {BASE_LR} x batch size / {BASE_BATCH_SIZE}; "
        f"pretrained: {PRETRAINED_BASE_LR} x batch size / {BASE_BATCH_SIZE}].",
        option="float", check=_lr)
    momentum: float = setting(0.9, "SGD momentum.", option="float", check=_momentum)
    weight_decay: float = setting(5e-4, "SGD weight decay (L2).", option="float",
                                  check=_weight_decay)
    batch_size: int | str = setting(
        "auto", f"Minibatch size (auto: {RGB_RECIPE.batch_size} for colour images from "
        f"scratch, else about {AUTO_STEPS_PER_EPOCH} steps an epoch, "
        f"{AUTO_BATCH_BOUNDS[0]} to {AUTO_BATCH_BOUNDS[1]}).", option="auto_int",
        check=integer(1, auto=True))
    augment: str = setting(
        "auto", f"Training augmentation (auto: {DEFAULT_RGB_AUGMENT} for colour images, "
        "none otherwise); losses and margins always come from un-augmented images.",
        option="choice", choices=("auto", *AUGMENTATIONS))
    score: str = setting("separation", "What the phase-II detector maximises.",
                         option="choice", choices=SCORES)
    suspicion: str = setting(
        "aum", "Per-sample score the flags are read from: minus the mean margin over "
        "epochs since every class was learned (AUM < 0 flagged), the windowed loss (the "
        "paper's, flagged above l_c) or its log. See docs/phases.md.",
        option="choice", choices=tuple(SUSPICIONS), check=_registered(SUSPICIONS))
    window: int = setting(3, "Average each sample's loss over this many epochs (1: the "
                          "paper).", option="int", check=integer(1))
    loss_pass: str = setting(
        "eval", "Per-sample losses from an eval pass after each epoch (the paper's), or "
        "free from the training pass.", option="choice", choices=LOSS_PASSES)
    seed: int = setting(
        0, "Seed of the run's randomness (weights, sample order, canaries): the same seed "
        "on the same device gives the same flags. bench: the one seed to run, as "
        "--seeds N.", option="int", check=integer(None))
    device: str = setting("auto", "auto, cpu, cuda or cuda:N.", check=_device)
    amp: bool | None = setting(
        None, "bf16 autocast on CUDA (off by default: see docs/performance.md).",
        option="flag")
    kind: SourceKind = setting("auto", "Force the input kind.", option="choice",
                               choices=get_args(SourceKind))
    path_column: str = setting("path", "A CSV's column of image paths.")
    label_column: str = setting("label", "A CSV's column of given labels.")
    noise_column: str | None = setting(
        None, "CSV column of trusted 0/1 wrong-label marks (research only).")
    root: str | None = setting(
        None, "The folder a DataFrame's relative paths resolve against.", option=None)
    image_column: str = setting("image", "A Hugging Face dataset's image column.",
                                option=None)
    image_size: int | None = setting(
        None, "Resize images to this square side [default: native up to 64 px].",
        option="int", check=integer(1, none=True))
    cache: str | None = setting(
        None, "Folder to keep decoded images in between runs (outside the input and --out); "
        "a rerun over unchanged files skips decoding. Needed for images over --max-memory.",
        option="path", free=True)
    max_memory: int | None = setting(
        None, "GiB the decoded images may take in memory [default: a quarter of RAM]; "
        "larger inputs are decoded once into --cache and memory-mapped.", option="gib",
        check=_max_memory, free=True)
    workers: int | str = setting(
        "auto", "DataLoader processes gathering batches of memory-mapped images (auto: 0 in "
        "memory, up to 4 mapped).", option="auto_int",
        check=integer(0, auto=True, from_text=True), free=True)
    compile: bool = setting(
        False, "torch.compile the forward passes (measure first: docs/performance.md).",
        option="flag")
    skip_unreadable: bool = setting(
        False, "Leave undecodable images out (listed in the report) instead of stopping.",
        option="flag")
    probe_every: int | str = setting(
        "auto", "Estimate order parameters every N epochs (0: off; auto: as often as keeps "
        f"the probe under {PROBE_BUDGET:.0%} of training time).", option="auto_int",
        check=integer(0, auto=True, from_text=True))
    probe_batches: int | None = setting(
        None, "Minibatch gradients per order-parameter probe (K).", option="int",
        check=integer(1, none=True))
    spectrum: bool = setting(False, "Also estimate the noise spectrum's D_s.", option="flag")
    verdict: str = setting(
        DEFAULT_VERDICT, "How the run decides to write its flags: the flags' estimated "
        "precision per class (from canaries), or 0.7's withholding rules.",
        option="choice", choices=VERDICT_RULES)
    canaries: float | str = setting(
        "auto", f"Known-wrong canaries per sample ('auto': {DEFAULT_SHARE} with --verdict "
        "estimate, else 0): samples held out under their labels and trained on under wrong "
        "ones, from which the run estimates its flags' precision (run.json's 'estimate').",
        check=_canaries)
    force_flags: bool = setting(
        False, "Write the flags even when the run is withheld (marked as forced).",
        option="flag")
    embeddings: bool = setting(
        True, "Write embeddings.npy, the penultimate features at t_c (N x D floats; turn "
        "off for very large sets).", option="switch")
    tensorboard_dir: str | None = setting(
        None, "Also log the per-epoch metrics, mixture and order parameters to this "
        "TensorBoard folder (needs the tensorboard package).", option="path",
        aliases=("--tensorboard",), free=True)
    progress: bool | str = setting(
        "auto", "Show a progress bar: True, False, or 'auto' (when stderr is a terminal; "
        "the command line always leaves it at 'auto').", option=None, check=_progress,
        free=True)

    def validate(self) -> None:
        """Check every setting that can be checked before any data is read, in field
        order; raise :class:`~labelclean.errors.LabelcleanError` for the first bad one."""
        for f in fields(self):
            check = spec(f.name).check
            if check is not None:
                check(f.name, getattr(self, f.name))
        if (self.pretrained or self.weights is not None) and isinstance(self.model, str):
            check_pretrainable(self.model, self.weights)  # the default model: at fit
        check_cleaner(self)  # seed range, optional packages, folders (labelclean.checks)

    def as_dict(self) -> dict[str, Any]:
        """The settings by name, paths as text."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in values.items()}


def spec(name: str) -> Setting:
    """The :class:`Setting` of the field ``name``."""
    return SPECS[name]


#: Each field's :class:`Setting`, by name, in field order.
SPECS: dict[str, Setting] = {f.name: f.metadata["setting"] for f in fields(Settings)}
#: Each field's default, by name.
DEFAULTS = Settings()


def free_settings() -> frozenset[str]:
    """The settings a resumed run may change: they change no number of the run."""
    return frozenset(name for name, s in SPECS.items() if s.free)
