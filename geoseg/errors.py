"""Exceptions and warnings raised by geoseg.

Every error geoseg raises derives from :class:`GeosegError` and also from the builtin
exception a user would naturally catch (``ValueError``, ``FileNotFoundError``, ...), so
``except ValueError`` keeps working. Messages name the file, band, key or value involved
and say what to do next.
"""

from __future__ import annotations


class GeosegError(Exception):
    """Root of all geoseg errors.

    One raised in a DataLoader worker process is raised again in the main process by
    PyTorch, made from a text that holds the worker's whole traceback ("Caught
    InputFileError in DataLoader worker process 0. Original Traceback ..."); it keeps its
    own one-line message there, and the worker's traceback becomes a note.
    """

    def __init__(self, *args: object) -> None:
        found = _worker_error(type(self), args)
        if found is None:
            super().__init__(*args)
            return
        message, traceback = found
        super().__init__(message)
        self.add_note(traceback)


def _worker_error(cls: type[BaseException], args: tuple[object, ...]) -> tuple[str, str] | None:
    """(message, worker traceback) of PyTorch's text of a worker's ``cls`` error, else None.

    The text is ``torch._utils.ExceptionWrapper``'s: "Caught NAME in DataLoader worker
    process N.", then "Original " and the formatted exception, whose last line is
    "module.NAME: message".
    """
    if len(args) != 1 or not isinstance(args[0], str):
        return None
    text = args[0]
    if not text.startswith(f"Caught {cls.__name__} in DataLoader worker process "):
        return None
    last = f"\n{cls.__module__}.{cls.__qualname__}: "
    at = text.rfind(last)
    if at < 0:
        return None
    where, _, traceback = text[:at].partition("\nOriginal ")
    where = where.removeprefix(f"Caught {cls.__name__} ")  # "in DataLoader worker process N."
    return text[at + len(last) :].rstrip("\n"), f"raised {where}\n{traceback}"


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
