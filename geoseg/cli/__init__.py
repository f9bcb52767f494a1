"""The ``geoseg`` command line: one thin module per subcommand.

Each module in this package defines ``add_parser(subparsers)`` (register options) and
``run(args) -> int`` (call one public library function, print the result). Parsing and
printing only: everything a command does is a public function a notebook can call.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import errno
import importlib
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from geoseg import __version__
from geoseg.errors import GeosegError
from geoseg.io.outputs import COMMITTED

#: Subcommand modules, in the order shown by ``geoseg --help``.
COMMANDS = (
    "train",
    "evaluate",
    "predict",
    "vectorize",
    "stats",
    "change",
    "panoptic",
    "export",
    "label",
    "demo",
)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser with every available subcommand registered, or only ``command``.

    Each command's module imports the libraries it needs; a run registers only its own
    (``geoseg predict`` then skips the vector stack: 0.3 s of every start), help and
    unknown commands register all.
    """
    parser = argparse.ArgumentParser(
        prog="geoseg",
        description="Segment remote-sensing imagery into georeferenced maps.",
    )
    parser.add_argument("--version", action="version", version=f"geoseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in (command,) if command in COMMANDS else COMMANDS:
        try:
            module = importlib.import_module(f"geoseg.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"geoseg.cli.{name}":
                continue  # subcommand not shipped in this build
            raise
        sp = module.add_parser(sub)
        sp.set_defaults(_run=module.run)
    return parser


def interrupted(args: argparse.Namespace) -> str:
    """The one line an interrupted command prints: what stopped and what it left."""
    if getattr(args, "resume", False):
        kept = "no output was written; the finished blocks are kept for --resume"
    else:
        kept = "no partial output was kept (files that existed before are as they were)"
    done = COMMITTED.summary()
    if done is not None:  # a command writing in stages had finished these
        kept = f"the outputs finished before it are kept ({done}); {kept} otherwise"
    command = f"geoseg {args.command}" if getattr(args, "command", None) else "geoseg"
    return f"{command}: interrupted; {kept}"


def finished_before(message: str) -> str:
    """``message`` of a failed command, with the outputs it had finished (if any)."""
    done = COMMITTED.summary()
    return message if done is None else f"{message} (outputs it finished before are kept: {done})"


#: Errors of the machine, not of geoseg: a full disk, a read-only or forbidden folder.
_FILESYSTEM_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES)


def filesystem_error(exc: BaseException) -> str | None:
    """A one-line reason when ``exc`` (or its causes) is a file system error, else None."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno in _FILESYSTEM_ERRNOS:
            where = f" ({cur.filename!r})" if cur.filename else ""
            return (
                f"{cur.strerror or os.strerror(cur.errno)}{where}: free space, or write to "
                "a folder you can write to"
            )
        cur = cur.__cause__ or cur.__context__
    return None


class Ended:
    """How a command ended, for a signal that arrives after the end (outputs complete)."""

    def __init__(self) -> None:
        self.args = argparse.Namespace(command=None)
        self.code: int | None = None  # the command's exit status, once it has ended
        self.kept: str | None = None  # the outputs it wrote (names), when it ended
        self.status: int | None = None  # what main returned

    def end(self, code: int) -> int:
        """Record that the command ended with ``code`` (and what it wrote); ``code``."""
        self.kept = COMMITTED.summary()
        self.code = code
        return code

    def line(self) -> str:
        """The one line for a signal after the end (or, before it, :func:`interrupted`'s)."""
        if self.code is None:
            return interrupted(self.args)
        command = f"geoseg {self.args.command}" if self.args.command else "geoseg"
        if self.code != 0:
            return f"{command}: interrupted after it ended (exit status {self.code})"
        done = f" ({self.kept})" if self.kept else ""
        return f"{command}: interrupted after it finished; its outputs are complete{done}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``geoseg`` console script.

    Ctrl-C or SIGTERM is one line and exit status 130 wherever it lands: while the
    command runs (:func:`interrupted`), and after it has ended, in its last lines or,
    when this is the program (``argv`` None: the console script, ``python -m geoseg``),
    while Python shuts down: the line then says that the outputs are complete.
    """
    program = argv is None and threading.current_thread() is threading.main_thread()
    ended = Ended()
    if program:
        atexit.register(_exit_when_ended, ended)  # registered first: runs last
    previous = _terminate_as_interrupt()
    hook = sys.unraisablehook
    sys.unraisablehook = _interrupts_not_lost(hook)
    COMMITTED.start()
    try:
        try:
            ended.status = _run_command(argv, ended)
        finally:
            COMMITTED.stop()
            sys.unraisablehook = hook
    except KeyboardInterrupt:  # after the command's end (it handles its own)
        print(ended.line(), file=sys.stderr)
        ended.status = 130
    finally:
        if program and ended.code is not None:
            _signals_after_the_end(ended)
        elif previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return ended.status


def _run_command(argv: Sequence[str] | None, ended: Ended) -> int:
    """Parse ``argv`` and run its command: the exit status (recorded in ``ended``)."""
    try:
        # imports the command's libraries: an interrupt here is one line too
        parser = build_parser(_command(sys.argv[1:] if argv is None else argv))
        ended.args = args = parser.parse_args(argv)
        if not getattr(args, "_run", None):
            parser.print_help()
            return ended.end(2)
        return ended.end(int(args._run(args) or 0))
    except GeosegError as exc:
        print(f"geoseg {ended.args.command}: error: {finished_before(str(exc))}", file=sys.stderr)
        return ended.end(1)
    except KeyboardInterrupt:
        print(ended.line(), file=sys.stderr)
        return 130
    except SystemExit as exc:
        # Lightning turns an interrupt of training into exit(1) after its own shutdown
        if not isinstance(exc.__context__, KeyboardInterrupt):
            raise
        print(ended.line(), file=sys.stderr)
        return 130
    except Exception as exc:
        reason = filesystem_error(exc)
        if reason is None:
            raise
        print(f"geoseg {ended.args.command}: error: {finished_before(reason)}", file=sys.stderr)
        return ended.end(1)


def _signals_after_the_end(ended: Ended) -> None:
    """Ctrl-C and SIGTERM after the command ended (in the program): one line, exit 130.

    Python's own handling would print a traceback (or "Exception ignored" in its shutdown)
    or, once the handlers are gone, end the process by the signal (-2, -15) with no line.
    """
    line = f"{ended.line()}\n".encode()

    def handler(signum: int, frame: Any) -> None:
        _flush_std_streams()
        with contextlib.suppress(OSError):
            os.write(2, line)
        os._exit(130)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def _exit_when_ended(ended: Ended) -> None:
    """The program's last exit function: end the process with the command's status now.

    Python restores the default signal handlers after its exit functions, and tearing
    down the imported libraries (torch, GDAL, Dask) takes a while: a signal in that time
    ended the process as killed (-2, -15), after complete outputs. Nothing is left to do
    for a command that ended (its outputs are renamed into place and closed), so the
    process exits here. A command that raised (a traceback) shuts down as usual.
    """
    if ended.code is None or ended.status is None:
        return
    _flush_std_streams()
    os._exit(ended.status)


def _flush_std_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # closed, or in a write interrupted here
            stream.flush()


def _command(argv: Sequence[str]) -> str | None:
    """The subcommand ``argv`` runs (its first word), None for help, version or a typo."""
    return argv[0] if argv and argv[0] in COMMANDS else None


def _interrupts_not_lost(hook: Any) -> Any:
    """An unraisable-exception hook that delivers an interrupt Python would have dropped.

    Ctrl-C and SIGTERM raise KeyboardInterrupt wherever the main thread is; inside a
    ``__del__`` or a weakref callback (run by the garbage collector at any moment) Python
    prints "Exception ignored" and goes on, so the run ignored the signal and ended with
    exit status 0. The signal is sent again from a helper thread, to be raised once the
    callback has returned.
    """

    def unraisable(info: Any) -> None:
        exc = info.exc_value
        if not isinstance(exc, KeyboardInterrupt):
            hook(info)
            return
        term = exc.args == (f"signal {int(signal.SIGTERM)}",)  # raised by the handler below
        signum = signal.SIGTERM if term else signal.SIGINT
        # a little later, so that it lands after this hook and the callback have returned
        # (should it land in another callback, it comes back here and is sent again)
        resend = threading.Timer(0.05, os.kill, args=(os.getpid(), signum))
        resend.daemon = True
        resend.start()

    return unraisable


def _terminate_as_interrupt() -> Any:
    """Treat SIGTERM like Ctrl-C, so that every output cleans up as on an interrupt.

    Returns the previous handler (None when not in the main thread, where signals cannot
    be set).
    """
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    return signal.signal(signal.SIGTERM, handler)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
