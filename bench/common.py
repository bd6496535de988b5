"""Shared helpers of the benchmark scripts: machine description, timing, tables, docs update.

Benchmarks print plain tables and (with ``--write-docs``) replace their own section of
docs/benchmarks.md, between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``, with the
machine, the date, the command and the table, so the document always says where numbers came from.

This module imports only the standard library, NumPy and (lazily) torch: the GPU check runs it on
a machine without pydicom.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import re
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

REPO_ROOT: Final[Path] = Path(__file__).resolve().parents[1]
DOCS_PATH: Final[Path] = REPO_ROOT / "docs" / "benchmarks.md"
#: The real normal head CT beside the project (../shared, absent on the GPU machine): the study
#: most benches time or check by default.
REAL_HEAD_STUDY: Final[Path] = REPO_ROOT.parent / "shared" / "data" / "real" / "head_ct_ge_tilted"
if str(REPO_ROOT) not in sys.path:  # scripts run as `python bench/x.py` from anywhere
    sys.path.insert(0, str(REPO_ROOT))


def package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def machine_description() -> str:
    """One line: CPU, cores, memory, notable ISA, GPU, library versions."""
    flags = cpu_flags()
    isa = ",".join(f for f in ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags)
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory = f"{pages / 2**30:.0f} GiB RAM"
    except (ValueError, OSError):
        memory = "RAM unknown"
    parts = [f"{cpu_model()} ({os.cpu_count()} cores{', ' + isa if isa else ''})", memory]
    try:
        import torch

        parts.append(f"torch {torch.__version__}")
        if torch.cuda.is_available():
            parts.append(f"GPU {torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})")
    except ImportError:
        pass
    parts.append(f"onnxruntime {package_version('onnxruntime')}")
    return ", ".join(parts)


def now_utc() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def command_line() -> str:
    return " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])


@dataclass(frozen=True)
class Timing:
    """Repeated wall-clock measurements of one thing, in seconds."""

    samples: tuple[float, ...]

    @property
    def best(self) -> float:
        return min(self.samples)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


def time_call(fn: Callable[[], object], *, repeats: int, warmup: int = 1) -> Timing:
    """Run ``fn`` ``warmup`` times untimed, then ``repeats`` times timed."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return Timing(tuple(samples))


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table; floats are printed as they come (format them first)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def plain_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A fixed-width text table for the terminal."""
    cells = [list(map(str, headers)), *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    out = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def section_text(title: str, body: str, *, notes: str = "") -> str:
    """A docs section: title, provenance lines, notes, body."""
    text = (
        f"### {title}\n\n"
        f"- machine: {machine_description()}\n"
        f"- date: {now_utc()}\n"
        f"- command: `{command_line()}`\n\n"
    )
    if notes:
        text += notes.rstrip() + "\n\n"
    return text + body.rstrip() + "\n"


def update_docs(name: str, text: str, path: Path = DOCS_PATH) -> None:
    """Replace (or append) the ``bench:NAME`` section of docs/benchmarks.md with ``text``."""
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{begin}\n{text.rstrip()}\n{end}"
    current = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    updated = (
        pattern.sub(lambda _: block, current)
        if pattern.search(current)
        else current.rstrip() + "\n\n" + block + "\n"
    )
    path.write_text(updated, encoding="utf-8")
