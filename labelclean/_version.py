"""The package's version, in a module of its own that imports nothing: every module
that records it (run.json, checkpoints, apply.json, ``--version``) reads it here, and
``pyproject.toml`` reads it from here too."""

__version__ = "0.10.0"
