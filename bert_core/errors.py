"""The package's one checkpoint error, in a module of its own so every layer can raise it.

The TF bundle reader, source resolution, vocabulary reading and loading all raise this class, so a
caller's ``except CheckpointError`` catches every way a checkpoint can be missing or broken.
"""

from __future__ import annotations

__all__ = ["CheckpointError"]


class CheckpointError(ValueError):
    """A checkpoint that cannot be found, read or mapped onto the model, or that uses an unsupported feature."""
