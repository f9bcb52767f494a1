"""Output paths: checks before work starts and atomic replacement when it ends.

The rules every writer of geoseg follows (a user's data is never lost):

* an output is written under a temporary name beside it and renamed only when complete;
  on any failure or interruption the temporary file is removed;
* ``overwrite`` replaces an existing *file*, never a folder;
* an output is never one of the run's inputs (also through links), nor inside a folder
  given as input (a later run would read it back as input);
* a file is more than its name: a Shapefile's ``.shx``/``.dbf``/``.prj``/``.cpg`` are
  outputs (and inputs) too, and so are the files a VRT input reads;
* the outputs of one command are different files.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import signal
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from geoseg.arguments import check_flag, check_path
from geoseg.errors import ConfigError, OutputError
from geoseg.io.files import dataset_file, is_dataset_name

# Read the process umask once (os.umask can only be read by setting it, which is not
# thread-safe inside running Dask threads).
_UMASK = os.umask(0o022)
os.umask(_UMASK)

#: Files written with a Shapefile (``x.shp`` comes with these).
SHAPEFILE_SIDECARS = (".shx", ".dbf", ".prj", ".cpg")
#: Files that belong to a Shapefile input (read by OGR, or its indexes and metadata).
_SHAPEFILE_INPUT_PARTS = (*SHAPEFILE_SIDECARS, ".qix", ".sbn", ".sbx", ".shp.xml", ".qmd")
#: Nesting depth followed through VRTs that read other VRTs.
_VRT_DEPTH = 8


def output_files(path: str | Path) -> list[Path]:
    """The files writing ``path`` creates: itself, and a Shapefile's sidecars."""
    p = Path(path)
    if p.suffix.lower() != ".shp":
        return [p]
    return [p, *(p.with_suffix(ext) for ext in SHAPEFILE_SIDECARS)]


def input_files(path: str | os.PathLike[str], _depth: int = 0) -> list[Path]:
    """The files reading ``path`` uses: itself, a Shapefile's parts, a VRT's sources.

    The file of a GDAL dataset name (``NETCDF:"x.nc":var``) is listed too
    (:func:`~geoseg.io.files.dataset_file`). Only local files that exist are listed; a
    VRT is followed into the VRTs it reads, up to :data:`_VRT_DEPTH` levels.
    """
    p = Path(path)
    out = [p]
    suffix = p.suffix.lower()
    if is_dataset_name(str(path)):  # NETCDF:"x.nc":var reads x.nc
        f = dataset_file(str(path))
        return out if f is None or _depth >= _VRT_DEPTH else out + input_files(f, _depth + 1)
    if suffix == ".shp":
        out += [q for ext in _SHAPEFILE_INPUT_PARTS if (q := p.with_suffix(ext)).exists()]
    elif suffix == ".vrt" and p.is_file() and _depth < _VRT_DEPTH:
        for src in dict.fromkeys(_vrt_sources(p)):  # a file per band: listed once
            out += input_files(src, _depth + 1)
    return list(dict.fromkeys(out))


def _vrt_sources(vrt: Path) -> list[Path]:
    """Local files a VRT names (``SourceFilename``), resolved as GDAL does."""
    try:
        # a local file the user named, read by GDAL too (expat >= 2.4 bounds entity expansion)
        root = ET.parse(vrt).getroot()
    except (ET.ParseError, OSError):
        return []  # not readable as XML: the reader reports it
    found = []
    for el in root.iter("SourceFilename"):
        name = (el.text or "").strip()
        if not name or "://" in name:
            continue  # not a local file
        f = dataset_file(name)  # NETCDF:"x.nc":var and netcdf:/abs/x.nc:var read x.nc
        if f is not None or name.startswith("/vsi") or is_dataset_name(name):
            found += [] if f is None else [f]  # a dataset name: its file, if a local one
            continue
        relative = el.get("relativeToVRT", "0") == "1" or el.get("relativetoVRT", "0") == "1"
        found.append(vrt.parent / name if relative else Path(name))
    return found


def check_distinct(outputs: Mapping[str, str | Path | None]) -> None:
    """OutputError when two of one command's outputs are the same file (or share one).

    ``outputs`` maps an option name (``-o``, ``--instances-output``) to its path; a
    Shapefile counts with its sidecars, links are followed.
    """
    seen: dict[Path, str] = {}
    for name, path in outputs.items():
        if path is None:
            continue
        for f in output_files(path):
            key = f.resolve()
            if key in seen and seen[key] != name:
                raise OutputError(
                    f"{name} {str(path)!r} and {seen[key]} are the same file "
                    f"({str(f)!r}); the outputs of one command must be different files"
                )
            seen[key] = name


def check_output_suffix(path: str | Path, suffixes: tuple[str, ...], *, what: str) -> None:
    """ConfigError when ``path``'s extension names another format than the one written.

    GDAL's utilities (``gdal_translate``, ``gdalwarp`` without ``-of``) and rasterio pick a
    file's driver from its extension, and so do viewers and web servers, so a GeoTIFF
    named ``.png`` is refused rather than written (a name without extension is accepted).

    Args:
        path: the output.
        suffixes: the accepted extensions, lower case, the usual one first.
        what: the format written, for the message (``"a GeoTIFF"``).
    """
    suffix = Path(path).suffix
    if not suffix or suffix.lower() in suffixes:
        return
    raise ConfigError(
        f"output {str(path)!r}: geoseg writes {what} there, so its name must end in "
        f"{' or '.join(suffixes)}, not {suffix!r} (GDAL and rasterio tell a file's format by "
        f"its extension); name it {str(Path(path).with_suffix(suffixes[0]))!r}"
    )


def check_output_path(
    path: str | Path,
    *,
    overwrite: bool = False,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
    name: str = "output",
) -> Path:
    """Validate an output path before any work starts.

    Args:
        path: the output file.
        overwrite: an existing *file* may be replaced.
        inputs: the run's input files and folders: the output may be none of them and
            not inside an input folder.
        name: how messages name the argument when ``path`` is not a path.

    Raises:
        ConfigError: ``path`` is not a path (None, a number, an array) or ``overwrite``
            is not True or False.
        OutputError: the parent folder is missing or not writable, the path is a folder,
            the file exists and ``overwrite`` is False, or the output is an input.
    """
    p = Path(check_path(path, name))
    overwrite = check_flag(overwrite, "overwrite")
    parent = p.parent if str(p.parent) else Path(".")
    if str(path).endswith(("/", os.sep)) and not p.exists():
        raise OutputError(
            f"output {str(path)!r} names a folder (it ends with {os.sep!r}); geoseg writes "
            "files: give a file name"
        )
    if p.is_dir():
        raise OutputError(
            f"output {str(p)!r} is a folder; geoseg writes files and never replaces a folder "
            "(--overwrite neither): give a file name, e.g. "
            f"{str(p / ('result' + (p.suffix or '.tif')))!r}"
        )
    if not parent.is_dir():
        raise OutputError(
            f"output folder {str(parent)!r} for {str(p)!r} does not exist; create it first"
        )
    if not os.access(parent, os.W_OK):
        raise OutputError(f"output folder {str(parent)!r} is not writable")
    for item in inputs:
        if item is not None and not isinstance(item, (str, os.PathLike)):
            continue  # an open dataset or an in-memory frame: not a path
        if item is not None:
            for part in input_files(item):
                for out in output_files(p):
                    _check_not_input(out, part, named=(p, Path(item)))
    for out in output_files(p):
        if out.is_dir():
            raise OutputError(f"{str(out)!r}, written with {str(p)!r}, is a folder")
        if out.exists() and not overwrite:
            also = "" if out == p else f" (written with {str(p)!r})"
            raise OutputError(
                f"output {str(out)!r}{also} already exists; pass overwrite=True / --overwrite"
            )
    return p


def _check_not_input(output: Path, item: Path, named: tuple[Path, Path] | None = None) -> None:
    """OutputError when ``output`` is the input ``item`` or lies in the input folder.

    ``named``: the output and input as the user named them, when ``output`` is a sidecar
    of the one or ``item`` a file the other reads (a Shapefile part, a VRT source).
    """
    if not item.exists():
        return
    if item.is_dir():
        # a folder input means its files (not its subfolders): an output written into it
        # would be read back as an input tile by the next run
        if output.resolve().parent != item.resolve():
            return
        raise OutputError(
            f"output {str(output)!r} is inside the input folder {str(item)!r}; a later run "
            "would read it back as input: write it elsewhere"
        )
    same = output.exists() and os.path.samefile(output, item)
    if same or output.resolve() == item.resolve():
        how = ""
        if named is not None and (named[0] != output or named[1] != item):
            how = f" (written with {str(named[0])!r}; read with the input {str(named[1])!r})"
        raise OutputError(
            f"output {str(output)!r} is the input {str(item)!r}{how}; geoseg never writes "
            "over its inputs: choose another output name"
        )


class CommitLog:
    """The outputs committed in this process since :meth:`reset` (a command's start).

    A command that writes its outputs in stages (the demo) and is then interrupted or
    fails has kept what it finished: its one-line message says so
    (:func:`geoseg.cli.main`) instead of claiming that nothing was written. Only a
    command records (:meth:`start` .. :meth:`stop`), so a long notebook or service
    session does not collect every path it ever wrote.
    """

    SHOWN = 3  # names in messages; the rest are counted

    def __init__(self) -> None:
        self.paths: list[Path] | None = None  # None: not recording (library use)

    def start(self) -> None:
        """Record from now on, from nothing (a command starts)."""
        self.paths = []

    def stop(self) -> None:
        """Stop recording and forget (a command ended): a notebook's outputs are not kept."""
        self.paths = None

    def add(self, targets: Iterable[Path]) -> None:
        """Record the outputs of a committed batch (while recording)."""
        if self.paths is not None:
            self.paths.extend(targets)

    def summary(self) -> str | None:
        """``'a.tif', 'b.gpkg' and 3 more``, or None when none of them is still there.

        Files committed into a work folder that the run removed again (training's
        checkpoints, when it is interrupted) are not kept, so not named.
        """
        kept = [p for p in dict.fromkeys(self.paths or ()) if os.path.lexists(p)]
        if not kept:
            return None
        names = ", ".join(repr(str(p)) for p in kept[: self.SHOWN])
        more = len(kept) - self.SHOWN
        return names + (f" and {more} more" if more > 0 else "")


#: Outputs committed by the running command (recorded by the CLI only).
COMMITTED = CommitLog()


class OutputBatch:
    """The outputs of one run: they appear together, or none of them does.

    Each output is written under a temporary name beside its target (:meth:`path`), or
    in a work folder on the same file system (:meth:`adopt`). :meth:`commit` moves every
    one into place with Ctrl-C and SIGTERM held back, so an interruption finds either all
    the previous files or all the new ones; :meth:`discard` removes the temporaries and
    the folders the batch made. Use it through :func:`atomic_outputs`.
    """

    def __init__(self) -> None:
        self._moves: list[tuple[Path, Path]] = []  # (written, target)
        self._targets: dict[Path, Path] = {}  # resolved target -> target
        self._remove: list[Path] = []
        self._made: list[Path] = []
        self._swept: set[Path] = set()
        self._done = False

    @property
    def targets(self) -> list[Path]:
        """The outputs of the batch, in the order they were added."""
        return [final for _, final in self._moves]

    def path(
        self,
        path: str | Path,
        *,
        overwrite: bool = False,
        inputs: Iterable[str | os.PathLike[str] | None] = (),
    ) -> Path:
        """A temporary path to write the output ``path`` to, beside it.

        ``path`` is checked as by :func:`check_output_path` (never a folder, never an
        input) and against the batch's other outputs.
        """
        final = check_output_path(path, overwrite=overwrite, inputs=inputs)
        parent = final.parent.resolve()
        if parent not in self._swept:
            remove_stale_temporaries(final.parent)
            self._swept.add(parent)
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{final.stem}.{owner()}-", suffix=f".tmp{final.suffix}",
            dir=final.parent or ".",
        )  # fmt: skip
        os.close(fd)
        tmp = Path(tmp_name)
        tmp.unlink()  # writers (GDAL, OGR) want to create the file themselves
        self._add(tmp, final)
        return tmp

    def adopt(self, written: str | Path, path: str | Path) -> None:
        """Move the finished file ``written`` (same file system) onto ``path`` at commit.

        ``path`` is the caller's to check; its missing folders are made at commit.
        """
        self._add(Path(written), Path(path))

    def remove(self, path: str | Path) -> None:
        """Delete ``path`` at commit: a file of the output this batch replaces."""
        self._remove.append(Path(path))

    def folder(self, path: str | Path) -> Path:
        """Make the folder ``path`` (if missing) now; :meth:`discard` removes it if empty."""
        p = Path(path)
        if p.resolve() in self._targets:
            raise OutputError(f"{str(p)!r} is both a file and a folder of this run's outputs")
        if not p.is_dir():
            p.mkdir()
            self._made.append(p)
        return p

    def _add(self, written: Path, final: Path) -> None:
        key = final.resolve()
        if key in self._targets:
            raise OutputError(
                f"output {str(final)!r} is also {str(self._targets[key])!r}; the outputs of "
                "one command must be different files"
            )
        if any(key == made.resolve() for made in self._made):
            raise OutputError(f"{str(final)!r} is both a file and a folder of this run's outputs")
        self._targets[key] = final
        self._moves.append((written, final))

    def commit(self) -> None:
        """Move every output into place and delete the files it replaces."""
        for written, final in self._moves:
            if final.is_dir():  # appeared while we worked: never replaced
                raise OutputError(f"output {str(final)!r} became a folder during the run")
            if written.is_file():
                # some writers create private (0600) files; give outputs normal permissions
                os.chmod(written, 0o666 & ~_UMASK)
        keep = set(self._targets)
        with interrupts_deferred():
            for written, final in self._moves:
                final.parent.mkdir(parents=True, exist_ok=True)
                _replace_shapefile_parts(written, final)
                os.replace(written, final)
            for old in self._remove:
                if old.resolve() not in keep:
                    old.unlink(missing_ok=True)
            self._done = True
            COMMITTED.add(self.targets)

    def discard(self) -> None:
        """Remove what the batch wrote (nothing once committed); never a previous file."""
        if self._done:
            return
        # sidecars: GDAL's .aux.xml / .ovr (name + ".*"), a Shapefile's .shx / .dbf (stem +
        # ".*"); each folder is listed once (an export of thousands of tiles into one
        # folder took minutes to clean up after Ctrl-C when it was listed per file)
        stems: dict[Path, set[str]] = {}
        for written, _ in self._moves:
            if written.is_dir():
                shutil.rmtree(written, ignore_errors=True)
            else:
                written.unlink(missing_ok=True)
            stems.setdefault(written.parent, set()).update((written.name, written.stem))
        for parent, names in stems.items():
            for extra in _sidecars(parent, names):
                extra.unlink(missing_ok=True)
        for made in reversed(self._made):
            with contextlib.suppress(OSError):
                made.rmdir()  # only when empty: what is left there is not ours


def _replace_shapefile_parts(written: Path, final: Path) -> None:
    """Move a written Shapefile's ``.shx``/``.dbf``/``.prj``/``.cpg`` onto ``final``'s.

    Part of the commit, just before the ``.shp`` itself: an interruption never pairs an
    old ``.shp`` with a new ``.dbf``. A part of the replaced output that the new one does
    not have (a ``.cpg``) is removed: it would describe the new file wrongly.
    """
    if final.suffix.lower() != ".shp" or written.suffix.lower() != ".shp":
        return
    for ext in SHAPEFILE_SIDECARS:
        part, target = written.with_suffix(ext), final.with_suffix(ext)
        if part.is_file():
            os.replace(part, target)
        else:
            target.unlink(missing_ok=True)


def _sidecars(folder: Path, names: set[str]) -> list[Path]:
    """Temporary files in ``folder`` named ``<one of names>.<anything>``, listed once."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    found = []
    for entry in entries:
        name = entry.name
        if not _TEMPORARY.match(name) or not entry.is_file(follow_symlinks=False):
            continue
        dots = [i for i, ch in enumerate(name) if ch == "." and i > 0]
        if any(name[:i] in names for i in dots):
            found.append(Path(entry.path))
    return found


@contextlib.contextmanager
def atomic_outputs() -> Iterator[OutputBatch]:
    """An :class:`OutputBatch` committed when the block succeeds, discarded on any exception.

    Interruptions included, a failed run leaves every previous file as it was and none
    of its own. A failure on a (nearly) full disk is an :class:`OutputError` saying so.
    """
    batch = OutputBatch()
    try:
        yield batch
        batch.commit()
    except BaseException as exc:
        # measured before the temporaries go: a write that failed on a (nearly) full disk
        # is reported as such even when the library's message does not say so (pyogrio:
        # "Failed to commit transaction")
        targets = batch.targets
        folder = targets[0].parent if targets else Path(".")
        full = isinstance(exc, Exception) and (disk_full(exc) or _low_space(folder, exc))
        batch.discard()
        if full and targets and not isinstance(exc, OutputError):
            more = f" and {len(targets) - 1} other output(s)" if len(targets) > 1 else ""
            raise OutputError(
                f"no space left on the device while writing {str(targets[0])!r}{more} (or "
                f"the temporaries beside them); nothing was written. Free space in "
                f"{str(folder)!r} or write the output elsewhere"
            ) from exc
        raise


@contextlib.contextmanager
def atomic_path(
    path: str | Path,
    *,
    overwrite: bool = False,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    On any exception (interruptions included) the temporary file is removed, so a failed
    run never leaves a half-written output behind. The output is checked as by
    :func:`check_output_path` (never a folder, never an input). Several outputs that
    succeed or fail together: :func:`atomic_outputs`.
    """
    with atomic_outputs() as batch:
        yield batch.path(path, overwrite=overwrite, inputs=inputs)


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) and SIGTERM back in this thread until the block ends.

    A signal that arrives meanwhile is delivered when the block ends. Threads started
    inside the block, and processes they start, inherit the blocked signals (on POSIX);
    elsewhere this does nothing.
    """
    if not hasattr(signal, "pthread_sigmask"):  # pragma: no cover - Windows
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


#: What GDAL, SQLite (GeoPackage) and the OS say when a disk is full.
_DISK_FULL = ("no space left on device", "database or disk is full", "disk full",
              "not enough space", "disk quota exceeded")  # fmt: skip


def disk_full(exc: BaseException) -> bool:
    """True when ``exc`` (or an exception it was raised from) says the disk is full.

    Libraries report it in their own words (GDAL: "No space left on device" in a
    RasterioIOError; SQLite: "database or disk is full"; numpy: an OSError), so the
    chain of causes is searched for ENOSPC / EDQUOT and for those messages.
    """
    import errno

    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(text in str(cur).lower() for text in _DISK_FULL):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


#: Below this much free space, a failed write is taken for a full disk.
LOW_SPACE = 4 * 2**20


def _low_space(folder: Path, exc: BaseException) -> bool:
    """An I/O error (not a bug in geoseg) while the disk has almost no space left."""
    io_error = isinstance(exc, OSError) or any(
        word in type(exc).__name__
        for word in ("IOError", "DataSource", "CPLE", "Write", "FeatureError")
    )
    try:
        return io_error and shutil.disk_usage(folder).free < LOW_SPACE
    except OSError:
        return False


@functools.cache
def machine() -> str:
    """8 hex digits naming this machine (container, pod) in temporary names.

    A process id means something only on the machine that made it. Computed once.
    """
    import hashlib
    import socket

    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


#: Temporary files and work folders geoseg makes beside its outputs, with the process and
#: machine that made them (``.<name>.<pid>@<machine>-<random>.tmp<suffix>``,
#: ``.geoseg-<what>-<pid>@<machine>-*``; geoseg before 2026-12-05 wrote no machine).
_TEMPORARY = re.compile(
    r"^\.(?:.+\.(?P<pid>\d+)(?:@(?P<host>[0-9a-f]{8}))?-[^.]+\.tmp.*"
    r"|geoseg-[a-z]+-(?P<wpid>\d+)(?:@(?P<whost>[0-9a-f]{8}))?-.+)$"
)


def owner() -> str:
    """``<pid>@<machine>`` of this process (after a fork: the child's own id)."""
    return f"{os.getpid()}@{machine()}"


def work_folder(parent: str | Path, what: str) -> Path:
    """A new hidden work folder beside the outputs.

    Its user removes it on success or failure; when its process was killed,
    :func:`remove_stale_temporaries` finds it by its name.
    """
    return Path(tempfile.mkdtemp(prefix=f".geoseg-{what}-{owner()}-", dir=parent))


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Remove geoseg's temporary files and work folders left in ``folder`` by dead processes.

    A run killed with SIGKILL (or a crash of the machine) cannot clean up after itself;
    the next run in the same folder does. Only names geoseg makes are considered, and only
    those of processes that no longer exist on this machine: a name made on another
    machine or container sharing the folder (a network drive, a mounted volume) is left
    alone, as its process id says nothing here.

    Returns:
        What was removed.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = _TEMPORARY.match(entry.name)
        if m is None:
            continue
        pid = int(m.group("pid") or m.group("wpid"))
        host = m.group("host") or m.group("whost")
        if (host is not None and host != machine()) or pid == os.getpid() or _alive(pid):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            continue  # another process may be removing it too
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True
