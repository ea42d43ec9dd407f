"""Exceptions raised by composer. Every user-facing failure is a ``ComposerError``."""

from __future__ import annotations


class ComposerError(Exception):
    """Base class: the CLI prints these as one line, without a traceback."""


class CompositionError(ComposerError):
    """An invalid composition (shapes, devices, a product without a positive expert...)."""


class UnknownNameError(CompositionError):
    """A name that no plugin registered; the message lists the closest registered names."""


class CompositionSyntaxError(CompositionError):
    """A syntax error in the composition language, shown with a caret under the position.

    Attributes:
        text: the text that was parsed.
        position: 0-based character offset of the error.
        reason: the message without the caret drawing.
    """

    def __init__(self, reason: str, text: str, position: int):
        self.reason, self.text, self.position = reason, text, position
        caret = " " * position + "^"
        super().__init__(f"{reason} at position {position}:\n  {text}\n  {caret}")


class PluginError(ComposerError):
    """A plugin failed to load or register, or two plugins claim one name."""


class DuplicateNameError(PluginError):
    """Two plugins registered the same name."""


class SamplingDivergedError(ComposerError):
    """Sampling produced non-finite energies or states."""


class UnboundedEnergyError(CompositionError):
    """A composition whose energy falls without bound (no distribution to sample)."""


class CheckpointError(ComposerError):
    """A checkpoint file is missing, malformed or incompatible."""
