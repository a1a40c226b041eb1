"""labelclean: find mislabelled samples from the phases of one SGD run.

Follows Feng & Tu (2021), "Phases of learning dynamics in artificial neural
networks in the absence or presence of mislabeled data".
"""

import logging

from . import fileformats  # noqa: F401 - registers the file formats (folder, CSVs)
from ._version import __version__
from .checkpoint import Checkpoint, load_checkpoint
from .cleaner import Cleaner
from .dataset import Dataset
from .decision import Verdict
from .errors import LabelcleanError, WithheldWarning
from .formats import load_dataset
from .inmemory import load_object  # noqa: F401 - registers the formats of Python objects
from .mixture import LossMixture, fit_loss_mixture
from .result import CleanResult

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
