"""Crash-safe writes: content, permissions, no half-written file on failure."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

import pytest

from ichnet_core.durable import TEMPORARY_SUFFIX, fsync_file, write_atomic


def test_bytes_and_streamed_content_land_under_the_final_name(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "a.bin"
    write_atomic(target, b"first")
    assert target.read_bytes() == b"first"
    write_atomic(target, lambda handle: handle.write(b"second"))
    assert target.read_bytes() == b"second"
    assert [p.name for p in target.parent.iterdir()] == ["a.bin"]


def test_mode_is_applied_and_default_follows_the_umask(tmp_path: Path) -> None:
    write_atomic(tmp_path / "secret", b"x", mode=0o600)
    assert stat.S_IMODE((tmp_path / "secret").stat().st_mode) == 0o600
    umask = os.umask(0o022)
    try:
        write_atomic(tmp_path / "plain", b"x")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "plain").stat().st_mode) == 0o644


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "kept"
    write_atomic(target, b"old")

    def broken(handle: BinaryIO) -> None:
        handle.write(b"partial")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        write_atomic(target, broken)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["kept"]


def test_temporary_files_are_hidden_and_carry_the_temporary_suffix(tmp_path: Path) -> None:
    seen: list[str] = []
    write_atomic(tmp_path / "result.json", lambda _: seen.extend(os.listdir(tmp_path)))
    [temporary] = seen
    assert temporary.startswith(".result.json.") and temporary.endswith(TEMPORARY_SUFFIX)


def test_fsync_file_flushes_an_existing_file_only(tmp_path: Path) -> None:
    written = tmp_path / "model.onnx"
    written.write_bytes(b"graph")
    fsync_file(written)
    with pytest.raises(FileNotFoundError):
        fsync_file(tmp_path / "missing.onnx")
