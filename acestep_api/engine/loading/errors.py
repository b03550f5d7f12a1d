"""What goes wrong when a checkpoint is looked for or loaded."""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint folder is missing, incomplete, or does not match its config."""


class LMLoadError(CheckpointError):
    """An LM folder is missing or unusable, or the chosen backend cannot run here."""
