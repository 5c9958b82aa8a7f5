"""The exceptions tlkit raises on purpose.

Every message says what went wrong, where (the path, the field, the class) and what to do.
The CLI turns any ``TlkitError`` into one line on stderr and exit code 1, with no traceback.
"""

from __future__ import annotations


class TlkitError(Exception):
    """Base class for every error tlkit raises deliberately."""


class DataError(TlkitError):
    """The dataset on disk cannot be used as it is (missing, empty, unreadable, too small)."""


class WeightsError(TlkitError):
    """Pretrained weights could not be found, loaded, or do not fit the architecture."""


class BackboneError(TlkitError):
    """A backbone name is unknown or the model cannot be built."""


class CheckpointError(TlkitError):
    """A checkpoint or saved model is missing, truncated, foreign or unsafe."""


class ConfigError(TlkitError):
    """A config field, recipe file, CLI option or run directory is invalid."""


class DivergedError(TlkitError):
    """Training produced a NaN or infinite loss."""


class ResourceError(TlkitError):
    """The machine ran out of something (GPU memory, disk space); the message says what to lower."""


class PredictionError(TlkitError):
    """A model gave no usable answer for an input (NaN or infinite outputs)."""
