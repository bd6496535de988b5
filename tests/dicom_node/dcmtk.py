"""Run dcmtk's command-line peers (echoscu, storescu) against a node on loopback.

dcmtk is the reference implementation most PACS interoperate with, so the integration tests
talk to the node through it rather than through pynetdicom on both ends. Every run sets
``TCP_NODELAY=1`` (without it dcmtk stalls about 45 ms per message on loopback) and a timeout,
so a hung association fails the test instead of blocking the suite.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

#: Wall-clock limit for one dcmtk invocation; loopback transfers here take well under a second.
TOOL_TIMEOUT_S: Final[float] = 60.0
#: dcmtk's own network timeouts (seconds), shorter than ours so dcmtk reports the failure.
ACSE_TIMEOUT_S: Final[int] = 10
DIMSE_TIMEOUT_S: Final[int] = 30


@dataclass(frozen=True)
class ToolRun:
    """One finished dcmtk invocation: its command line, exit status and combined output."""

    args: tuple[str, ...]
    returncode: int
    output: str

    def __str__(self) -> str:
        return f"$ {' '.join(self.args)}\n(exit {self.returncode})\n{self.output}"


@functools.cache
def dcmtk_tool(name: str) -> str | None:
    """Path of dcmtk's ``name`` on PATH, or ``None``.

    Not plain ``shutil.which``: pynetdicom installs console scripts under dcmtk's names
    (echoscu, storescu, storescp, ...) into the virtualenv's ``bin``, which comes first on PATH
    once the virtualenv is activated; they take other options and print other messages. The
    first candidate whose ``--version`` names dcmtk is taken.
    """
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        candidate = shutil.which(name, path=folder) if folder else None
        if candidate is None:
            continue
        version = subprocess.run(
            [candidate, "--version"], capture_output=True, timeout=TOOL_TIMEOUT_S, check=False
        )
        if b"dcmtk" in version.stdout + version.stderr:
            return candidate
    return None


def require_tool(name: str) -> str:
    """Path of a dcmtk tool; skips the test (naming the Debian package) when it is missing."""
    path = dcmtk_tool(name)
    if path is None:
        pytest.skip(f"dcmtk tool {name!r} not installed (Debian package 'dcmtk')")
    return path


def run_tool(name: str, *args: str) -> ToolRun:
    """Run ``name args...`` with TCP_NODELAY=1 and :data:`TOOL_TIMEOUT_S`; never raises on failure."""
    command = (require_tool(name), *args)
    completed = subprocess.run(
        command,
        env={**os.environ, "TCP_NODELAY": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=TOOL_TIMEOUT_S,
        check=False,
    )
    return ToolRun(
        args=(name, *args), returncode=completed.returncode, output=completed.stdout.decode()
    )


def echoscu(port: int, calling_ae: str, called_ae: str, *options: str) -> ToolRun:
    """C-ECHO from ``calling_ae`` to ``called_ae`` at 127.0.0.1:``port``."""
    return run_tool(
        "echoscu",
        *options,
        "-ta",
        str(ACSE_TIMEOUT_S),
        "-aet",
        calling_ae,
        "-aec",
        called_ae,
        "127.0.0.1",
        str(port),
    )


def write_exact_profile(config_path: Path, contexts: list[tuple[str, str]]) -> None:
    """A storescu association profile proposing each (SOP Class, transfer syntax) pair alone.

    With only the file's own transfer syntax on offer storescu cannot fall back to converting
    to an uncompressed one, so a successful store proves the SCP accepted exactly that syntax.
    Written in dcmtk's association negotiation config format (see /etc/dcmtk/storescu.cfg).
    """
    lines = ["[[TransferSyntaxes]]"]
    for index, (_, transfer_syntax) in enumerate(contexts, start=1):
        lines += [f"[TS{index}]", f"TransferSyntax1 = {transfer_syntax}"]
    lines += ["[[PresentationContexts]]", "[Contexts]"]
    for index, (sop_class, _) in enumerate(contexts, start=1):
        lines.append(f"PresentationContext{index} = {sop_class}\\TS{index}")
    lines += ["[[Profiles]]", "[Exact]", "PresentationContexts = Contexts"]
    config_path.write_text("\n".join(lines) + "\n")


def storescu_args(
    port: int,
    files: list[Path],
    calling_ae: str,
    called_ae: str,
    *options: str,
) -> tuple[str, ...]:
    """storescu's arguments (without the program) to C-STORE ``files`` to 127.0.0.1:``port``;
    for callers that run it in the background (:func:`storescu` waits for it)."""
    return (
        "-nh",  # do not stop at the first refused file: each file gets its own response
        "-ta",
        str(ACSE_TIMEOUT_S),
        "-td",
        str(DIMSE_TIMEOUT_S),
        *options,
        "-aet",
        calling_ae,
        "-aec",
        called_ae,
        "127.0.0.1",
        str(port),
        *(str(f) for f in files),
    )


def storescu(
    port: int,
    files: list[Path],
    calling_ae: str,
    called_ae: str,
    *options: str,
) -> ToolRun:
    """C-STORE ``files`` with storescu; ``options`` go before the files (e.g. ``-xf cfg Exact``)."""
    return run_tool("storescu", *storescu_args(port, files, calling_ae, called_ae, *options))
