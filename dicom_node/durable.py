"""Durability primitives shared by the spool, the outbox and the result writers."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_directory(directory: Path | str) -> None:
    """Flush a directory, so a rename, a new entry or an unlink inside it survives a power cut.

    POSIX makes a file's *content* durable with fsync on the file, but its *name* only with
    fsync on the directory that holds it.
    """
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
