"""labelclean: find mislabelled samples from the phases of one SGD run.

Follows Feng & Tu (2021), "Phases of learning dynamics in artificial neural
networks in the absence or presence of mislabeled data".
"""

import logging

from ._version import __version__
from .checkpoint import Checkpoint, load_checkpoint
from .cleaner import Cleaner
from .decision import Verdict
from .errors import LabelcleanError, WithheldWarning
from .inmemory import load_object  # noqa: F401 - registers the reader of Python objects
from .mixture import LossMixture, fit_loss_mixture
from .result import CleanResult
from .sources import Dataset, load_dataset

# Messages go to the "labelclean" logger; the application decides where they go.
logging.getLogger("labelclean").addHandler(logging.NullHandler())

__all__ = [
    "Checkpoint",
    "CleanResult",
    "Cleaner",
    "Dataset",
    "LabelcleanError",
    "LossMixture",
    "Verdict",
    "WithheldWarning",
    "__version__",
    "fit_loss_mixture",
    "load_checkpoint",
    "load_dataset",
]
