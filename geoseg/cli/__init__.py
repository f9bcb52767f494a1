"""The ``geoseg`` command line: one thin module per subcommand.

Each module in this package defines ``add_parser(subparsers)`` (register options) and
``run(args) -> int`` (call one public library function, print the result). Parsing and
printing only: everything a command does is a public function a notebook can call.
"""

from __future__ import annotations

import argparse
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``geoseg`` console script."""
    previous = _terminate_as_interrupt()
    hook = sys.unraisablehook
    sys.unraisablehook = _interrupts_not_lost(hook)
    args = argparse.Namespace(command=None)
    COMMITTED.start()
    try:
        # imports the command's libraries: an interrupt here is one line too
        parser = build_parser(_command(sys.argv[1:] if argv is None else argv))
        args = parser.parse_args(argv)
        if not getattr(args, "_run", None):
            parser.print_help()
            return 2
        return int(args._run(args) or 0)
    except GeosegError as exc:
        print(f"geoseg {args.command}: error: {finished_before(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(interrupted(args), file=sys.stderr)
        return 130
    except SystemExit as exc:
        # Lightning turns an interrupt of training into exit(1) after its own shutdown
        if not isinstance(exc.__context__, KeyboardInterrupt):
            raise
        print(interrupted(args), file=sys.stderr)
        return 130
    except Exception as exc:
        reason = filesystem_error(exc)
        if reason is None:
            raise
        print(f"geoseg {args.command}: error: {finished_before(reason)}", file=sys.stderr)
        return 1
    finally:
        COMMITTED.stop()
        sys.unraisablehook = hook
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


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
