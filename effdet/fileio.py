"""Atomic file writes: the one place in the project that writes a file in place.

A file is written to a temporary name in its destination folder, flushed to disk, then renamed
over the destination (``os.replace``, atomic on POSIX and Windows). An interrupted or failed
write (a full disk, Ctrl-C, ``kill -9``) never leaves a half-written file under the real name and
leaves any previous file intact. A failed write raises :class:`WriteError`, one line naming the
file. Files get the permissions the user's umask gives new files (``mkstemp`` alone would make them
private, mode 0600). This is a leaf module: it imports only the standard library.

Temporaries are named ``.NAME.effdet-tmp-PID-XXXXXXXX<suffix>`` (PID: the writer's process id,
XXXXXXXX: ``mkstemp``'s random part), and the working folders that jobs make in the system's
temporary folder ``PREFIX-PID-XXXXXXXX`` (:func:`temporary_folder`). Only names of
exactly that form whose process no longer runs (killed with ``kill -9``, preempted) are removed, at
the next write of the same file or the next such folder; a user's own ``.NAME.bak`` or
``.NAME.123.pt`` is never touched, whatever its age.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, Collection, Iterable, Iterator

TEMP_MARK = "effdet-tmp"
"""The part of every temporary's name that says this project made it (next to the writer's pid)."""


class WriteError(OSError):
    """A file or folder could not be written (full disk, no permission, a folder where a file
    should be, ...); the message names it and says what to do."""


def _reason(error: BaseException) -> str:
    if isinstance(error, OSError):
        if error.errno == errno.ENOSPC:
            return "the disk is full"
        if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return "permission denied (read-only or not yours)"
        if error.errno == errno.EISDIR:
            return "a folder of that name is in the way"
        return error.strerror or str(error)
    if _is_cpp_write_failure(error):
        return "the write failed (is the disk full?)"
    return (str(error).splitlines() or [type(error).__name__])[0][:200]


def _is_cpp_write_failure(error: BaseException) -> bool:
    """A failed write (a full disk) that a C++ writer reports as a RuntimeError, hiding the OSError:
    torch.save's (``file write failed``, ``inline_container``) and OpenVINO's ``save_model``
    (``basic_ios::clear``, the C++ stream's failure)."""
    return isinstance(error, RuntimeError) and any(
        mark in str(error) for mark in ("file write failed", "inline_container", "basic_ios::clear"))


def write_error(path: str | Path, error: BaseException, what: str = "file") -> WriteError:
    """A :class:`WriteError` for a failed write of ``path``, saying why and what to do."""
    full = (isinstance(error, OSError) and error.errno == errno.ENOSPC) or not isinstance(error, OSError)
    todo = "Free disk space or choose another output location" if full else "Choose another output location"
    return WriteError(f"could not write {what} {path}: {_reason(error)}. {todo}; any previous file there is unchanged")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (on this machine). Where that cannot be asked safely (Windows,
    where ``os.kill`` would end the process) every process counts as running."""
    if os.name == "nt":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):  # another user's live process; no such pid
        return True
    return True


def _dead_writer(name: str, pattern: re.Pattern[str]) -> bool:
    """``name`` has this project's temporary form and its writer's process no longer runs."""
    match = pattern.fullmatch(name)
    return match is not None and not _pid_alive(int(match.group(1)))


def _temp_pattern(name: str) -> re.Pattern[str]:
    """``.NAME.effdet-tmp-PID-XXXXXXXX<suffix>``: exactly the names :func:`_temporary` makes."""
    return re.compile(rf"\.{re.escape(name)}\.{TEMP_MARK}-([1-9][0-9]*)-[a-z0-9_]{{8}}(?:\.[A-Za-z0-9_-]+)?")


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Remove temporary files of ``path`` left by writers that were killed (``kill -9``, power loss).

    Only ``.NAME.effdet-tmp-PID-XXXXXXXX<suffix>`` files (the names :func:`atomic_write` and
    :func:`atomic_path` make) whose process PID no longer runs are removed; a live writer's, and
    any other name however similar (``.NAME.bak``, ``.NAME.123.pt``), are kept. Writers on another
    machine sharing the folder (NFS) are told apart only by their pid. Returns the removed paths.
    """
    path = Path(path)
    pattern, removed = _temp_pattern(path.name), []
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        try:
            if _dead_writer(entry.name, pattern) and entry.is_file() and not entry.is_symlink():
                entry.unlink()
                removed.append(entry)
        except OSError:
            continue
    return removed


def _temporary(path: Path, suffix: str) -> tuple[int, str]:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path)
        return tempfile.mkstemp(prefix=f".{path.name}.{TEMP_MARK}-{os.getpid()}-", suffix=suffix, dir=path.parent)
    except OSError as e:
        raise write_error(path, e) from None


@contextlib.contextmanager
def temporary_folder(prefix: str) -> Iterator[Path]:
    """A new folder ``PREFIX-PID-XXXXXXXX`` in the system's temporary folder (PID: this process),
    removed with its contents when the ``with`` body ends. Folders of exactly that form that this
    user's processes left and that no longer run (an export killed by a preemption) are removed
    first; no other folder is touched.

    Raises:
        WriteError: the folder cannot be made.
    """
    parent = Path(tempfile.gettempdir())
    pattern = re.compile(rf"{re.escape(prefix)}-([1-9][0-9]*)-[a-z0-9_]{{8}}")
    try:
        entries = list(parent.iterdir())
    except OSError:
        entries = []
    for entry in entries:
        try:
            mine = not hasattr(os, "getuid") or entry.stat().st_uid == os.getuid()
            if _dead_writer(entry.name, pattern) and entry.is_dir() and not entry.is_symlink() and mine:
                shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            continue
    try:
        folder = Path(tempfile.mkdtemp(prefix=f"{prefix}-{os.getpid()}-", dir=parent))
    except OSError as e:
        raise write_error(parent / prefix, e, "temporary folder") from None
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def _replace_on_success(path: Path, tmp: str) -> Iterator[None]:
    """Rename ``tmp`` onto ``path`` (with the permissions the umask gives new files) when the body
    succeeds; otherwise remove ``tmp`` and re-raise, a failed write (an ``OSError``, or torch's or
    OpenVINO's error for one) as :class:`WriteError`."""
    try:
        yield
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if not isinstance(e, WriteError) and (isinstance(e, OSError) or _is_cpp_write_failure(e)):
            raise write_error(path, e) from None
        raise


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb", encoding: str | None = None,
                 suffix: str = ".tmp") -> Iterator[IO]:
    """Open a temporary file next to ``path`` for writing; rename it onto ``path`` on success.

    Args:
        path: the destination; its parent folders are created.
        mode: ``"wb"`` (binary) or ``"w"`` (text, with ``encoding``).
        suffix: the temporary file's suffix. Writers that pick the format from the file name
            (PIL's ``Image.save``) need the destination's own suffix.

    Yields:
        The open temporary file. If the ``with`` body raises, the temporary file is removed and
        the exception propagates (an ``OSError``, or a C++ writer's error for a failed write, as
        :class:`WriteError`); ``path`` is untouched.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    fd, tmp = _temporary(path, suffix)
    with _replace_on_success(path, tmp), os.fdopen(fd, mode, encoding=encoding if mode == "w" else None) as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path next to ``path`` for writers that take a file name (``torch.onnx.export``,
    ``onnx.save``); renamed onto ``path`` when the ``with`` body succeeds, removed otherwise."""
    path = Path(path)
    fd, tmp = _temporary(path, suffix)
    os.close(fd)
    with _replace_on_success(path, tmp):
        yield Path(tmp)


def save_figure(fig: Any, path: str | Path, dpi: int = 100) -> Path:
    """Write a matplotlib ``Figure`` atomically to ``path`` in the format its suffix names (PNG
    without one), cropped to its content (``bbox_inches="tight"``); the figure is cleared after,
    written or not, so its memory is released. Returns ``path``. Raises :class:`WriteError`."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    try:
        with atomic_write(path, "wb", suffix=path.suffix) as f:
            fig.savefig(f, format=fmt, dpi=dpi, bbox_inches="tight")
    finally:
        fig.clear()
    return path


def check_output_file(path: str | Path, flag: str) -> Path:
    """Before any work: ``path`` can be written as a file (not a folder; its folder exists or can be
    made, and is writable). Raises :class:`WriteError` naming ``flag`` and the path."""
    path = Path(path)
    if path.is_dir():
        raise WriteError(f"{flag} {path} is a folder; give a file name")
    _check_folder(path.parent, flag, path)
    return path


def check_output_folder(path: str | Path, flag: str) -> Path:
    """Before any work: ``path`` is a folder that exists or can be made, and is writable."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise WriteError(f"{flag} {path} is a file, not a folder; give a folder name")
    _check_folder(path, flag, path)
    return path


def _check_folder(folder: Path, flag: str, target: Path) -> None:
    existing = folder
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise WriteError(f"{flag} {target}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise WriteError(f"{flag} {target}: cannot write into {existing} (permission denied); "
                         "choose another output location")


MAX_TEXT_BYTES = 256 * 1024 * 1024
"""The largest text file (annotations, class names, recipes) the project reads: 256 MiB. COCO's own
``instances_train2017.json`` is 448 MB, so larger files need ``max_bytes`` set by the caller."""


class ReadError(ValueError):
    """A text input could not be read (missing, not a regular file, too large, not UTF-8); the
    message names the file and says what to do."""


def read_text_bounded(path: str | Path, what: str = "file", max_bytes: int = MAX_TEXT_BYTES) -> str:
    """The UTF-8 text of ``path``, refusing anything that is not a regular file or is over ``max_bytes``.

    ``/dev/zero``, a FIFO or a 10 GB file named as a class-names file would otherwise be read for
    ever or until memory runs out; at most ``max_bytes + 1`` bytes are ever read.

    Raises:
        ReadError: missing, a folder or device, over ``max_bytes``, or not UTF-8; one line naming
            ``what`` and ``path``.
    """
    path = Path(path)
    try:
        if not path.exists():
            raise ReadError(f"{what} {path} does not exist")
        if not path.is_file():
            raise ReadError(f"{what} {path} is not a regular file (a folder, device or pipe); give a file")
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise ReadError(f"cannot read {what} {path}: {e.strerror or e}") from None
    if len(data) > max_bytes:
        raise ReadError(f"{what} {path} is over {max_bytes / 2**20:.0f} MiB, the most this project reads "
                        "as text; check that it is the right file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ReadError(f"{what} {path} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def check_output_spares_inputs(output: str | Path, flag: str,
                               inputs: Iterable[tuple[str, str | Path | None]],
                               read_suffixes: Collection[str] | None = None) -> None:
    """Before any work: writing ``output`` cannot replace an input. The one rule of every job.

    Args:
        output: a file the job will write.
        flag: the flag that named it (``--json``), for the message.
        inputs: ``(flag, path)`` of every input file and folder (weights, class names, annotation
            files, image and label folders); ``None`` paths are skipped.
        read_suffixes: lower-case suffixes (``.jpg``, ``.txt``) of the files the job reads from
            its input folders; ``None``: any existing file in an input folder counts as an input.

    Raises:
        WriteError: ``output`` is an input file (also through a link), or lies inside an input
            folder where it would replace a file the job reads. Never relaxed by ``--overwrite``.
    """
    out = Path(output)
    for in_flag, in_path in inputs:
        if in_path is None:
            continue
        src = Path(in_path)
        if src.is_dir():
            if _inside(out, src) and (out.exists() if read_suffixes is None
                                      else out.suffix.lower() in read_suffixes):
                raise WriteError(f"{flag} {out} lies in the {in_flag} folder {src}, where it would replace "
                                 "an input file; choose an output outside it")
        elif _same_file(out, src):
            raise WriteError(f"{flag} {out} is the {in_flag} input; writing it would destroy that file. "
                             "Choose another output file")


__all__ = ["MAX_TEXT_BYTES", "ReadError", "WriteError", "atomic_path", "atomic_write", "check_output_file",
           "check_output_folder", "check_output_spares_inputs", "read_text_bounded",
           "remove_stale_temporaries", "temporary_folder", "write_error"]
