"""``python -m labelclean``: the command line (see :mod:`labelclean.cli`)."""

from .cli import main

main(prog_name="labelclean")
