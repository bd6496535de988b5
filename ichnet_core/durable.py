"""Crash-safe file writes: the one implementation every package uses.

A file is durable, and never seen half written, when it is written to a temporary file in the
same directory, flushed and fsynced, renamed over its final name, and the directory is fsynced
(POSIX makes a file's content durable with fsync on the file, but its name only with fsync on
the directory that holds it). Received instances, outboxes, result.json, weights, engine plans,
exports, training checkpoints and caches all go through :func:`write_atomic`; files another
library writes itself (an ONNX export) are made durable with :func:`fsync_file`.

Temporary files are ``.<final name>.<random>.tmp`` beside the final file: hidden, unique per
write (two threads writing the same name never share one), never mistaken for a final file,
and easy to find after a crash (:data:`TEMPORARY_SUFFIX`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Final

#: Every temporary file of :func:`write_atomic` starts with a dot and ends with this.
TEMPORARY_SUFFIX: Final[str] = ".tmp"


def fsync_file(path: Path | str) -> None:
    """Flush a file someone else wrote (its content, not its name: see :func:`fsync_directory`)."""
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def fsync_directory(directory: Path | str) -> None:
    """Flush a directory, so a rename, a new entry or an unlink inside it survives a power cut."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(
    path: Path | str,
    data: bytes | Callable[[BinaryIO], object],
    *,
    mode: int | None = None,
) -> None:
    """Write ``data`` to ``path`` durably and atomically (see the module docstring).

    Parameters
    ----------
    path:
        Final name; its parent is created when missing.
    data:
        The bytes, or a function that writes them to the open binary handle (``torch.save``,
        ``np.savez_compressed``), so large objects are streamed rather than held twice.
    mode:
        Permission bits of the file (e.g. ``0o600`` for patient data); ``None`` keeps the
        process umask's default.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX
    )
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        else:
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; behave like open() otherwise
        with os.fdopen(fd, "wb") as handle:
            if isinstance(data, bytes | bytearray | memoryview):
                handle.write(data)
            else:
                data(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)
