"""Atomic file writes: the one place in the project that writes a file in place.

A file is written to a temporary name in its destination folder, flushed to disk, then renamed
over the destination (``os.replace``, atomic on POSIX and Windows). An interrupted or failed
write (a full disk, Ctrl-C, ``kill -9``) never leaves a half-written file under the real name and
leaves any previous file intact. This is a leaf module: it imports only the standard library.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator


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
        the exception propagates; ``path`` is untouched.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=encoding if mode == "w" else None) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path next to ``path`` for writers that take a file name (``torch.onnx.export``,
    ``onnx.save``); renamed onto ``path`` when the ``with`` body succeeds, removed otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


__all__ = ["atomic_path", "atomic_write"]
