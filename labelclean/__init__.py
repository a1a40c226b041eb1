"""labelclean: find mislabelled samples from the phases of one SGD run.

Follows Feng & Tu (2021), "Phases of learning dynamics in artificial neural
networks in the absence or presence of mislabeled data".
"""

__version__ = "0.9.0"

import logging  # noqa: E402

# Messages go to the "labelclean" logger; the application decides where they go.
logging.getLogger("labelclean").addHandler(logging.NullHandler())

from .checkpoint import Checkpoint, load_checkpoint  # noqa: E402
from .cleaner import Cleaner  # noqa: E402
from .decision import Verdict  # noqa: E402
from .errors import LabelcleanError, WithheldWarning  # noqa: E402
from .inmemory import load_object  # noqa: E402, F401 - registers the reader of Python objects
from .mixture import LossMixture, fit_loss_mixture  # noqa: E402
from .result import CleanResult  # noqa: E402
from .sources import Dataset, load_dataset  # noqa: E402

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
