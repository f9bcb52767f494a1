"""Exceptions and warnings raised by geoseg.

Every error geoseg raises derives from :class:`GeosegError` and also from the builtin
exception a user would naturally catch (``ValueError``, ``FileNotFoundError``, ...), so
``except ValueError`` keeps working. Messages name the file, band, key or value involved
and say what to do next.
"""

from __future__ import annotations


class GeosegError(Exception):
    """Root of all geoseg errors."""


class ConfigError(GeosegError, ValueError):
    """A configuration key or value is invalid (unknown key, wrong type, bad value)."""


class DataError(GeosegError, ValueError):
    """Input data is unusable: no overlap, wrong band count, all no-data, bad values."""


class InputFileError(GeosegError, FileNotFoundError):
    """An input file is missing, unreadable, corrupt or truncated."""


class CheckpointError(GeosegError, ValueError):
    """A checkpoint is corrupt, not a geoseg checkpoint, or from an incompatible version."""


class OutputError(GeosegError, OSError):
    """An output cannot be written (exists without overwrite, folder missing, not writable)."""


class SchedulerError(GeosegError, ConnectionError):
    """A Dask scheduler cannot be reached or a distributed run failed."""


class GeosegWarning(UserWarning):
    """Root of all geoseg warnings."""


class ReprojectionWarning(GeosegWarning):
    """Data was reprojected or resampled to a common grid."""


class NoDataWarning(GeosegWarning):
    """Much or all of an input is no-data."""
