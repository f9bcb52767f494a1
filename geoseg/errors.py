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


class ResourceError(GeosegError, MemoryError):
    """The machine lacks what an option asks for (memory for a tile size), refused before use."""


class SchedulerError(GeosegError, ConnectionError):
    """A Dask scheduler cannot be reached or a distributed run failed."""


class GeosegWarning(UserWarning):
    """Root of all geoseg warnings."""


class ReprojectionWarning(GeosegWarning):
    """Data was reprojected or resampled to a common grid."""


class NoDataWarning(GeosegWarning):
    """Much or all of an input is no-data."""


class DataWarning(GeosegWarning):
    """Input data is usable but suspicious (overlapping objects, values out of range)."""


def warn(message: str, category: type[Warning] = GeosegWarning) -> None:
    """Issue ``message`` attributed to the first caller outside the geoseg package.

    A fixed ``stacklevel`` is right for one call depth only: the same warning raised from
    ``geoseg.data`` through a Lightning data module, or from ``analysis.change`` through
    the CLI, would point at a line inside geoseg. This walks the stack instead (the
    approach of pandas' ``find_stack_level``), so the warning names the user's own line.
    """
    import inspect
    import os
    import warnings

    package_dir = os.path.dirname(__file__)
    frame = inspect.currentframe()
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(package_dir):
        frame = frame.f_back
        level += 1
    del frame
    warnings.warn(message, category, stacklevel=level)


def brief(value: object, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, for error messages about bad values."""
    try:
        text = repr(value)
    except ValueError:  # an int too long to print
        return "<a number with thousands of digits>"
    return text if len(text) <= limit else text[: limit - 3] + "..."
