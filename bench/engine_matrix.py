"""The measurement loop shared by bench/engines.py (CPU) and bench/gpu_check.py (GPU).

For each case (input size x slices) every engine runs ``run_network`` on the same phantom input:
a short warm-up each (which also compiles/captures on first use), then timed runs taken
round-robin over the engines. Parity is against the
first engine of the list (the float32 torch reference): max abs difference of the segmentation
softmax and of the slice/subject sigmoids, and agreement of the argmax labels at model
resolution. Every measurement is guarded: an error is printed and recorded, and the run goes on;
after ``budget_s`` the remaining measurements are recorded as skipped.
"""

from __future__ import annotations

import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
from common import plain_table

HEADERS: Final[tuple[str, ...]] = (
    "input",
    "slices",
    "engine",
    "build s",
    "best s",
    "median s",
    "x vs fp32",
    "slices/s",
    "max|dp| seg",
    "max|dp| cls",
    "labels equal",
    "parity",
    "peak GPU MiB",
    "note",
)
MIN_LABEL_AGREEMENT: Final[float] = 0.999
#: Slices of the untimed warm-up run (kept short so 300-slice cases are not run twice).
WARMUP_SLICES: Final[int] = 20


@dataclass
class EngineSpec:
    """One engine configuration: how to build it, its parity tolerance, why it is unavailable."""

    label: str
    build: Callable[[Any, Path], Any]
    atol: float
    unavailable: str | None = None


@dataclass
class Report:
    """Rows as they are measured; ``on_row`` persists them (so a killed run keeps its rows)."""

    on_row: Callable[[Report], None] = lambda _report: None
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, row: Sequence[object]) -> None:
        cells = [str(c) for c in row]
        if len(cells) < len(HEADERS):  # a short row: its last cell is the note
            note = cells.pop()
            cells += [""] * (len(HEADERS) - 1 - len(cells)) + [note]
        self.rows.append(cells)
        print(plain_table(HEADERS, [cells]).splitlines()[-1], flush=True)
        self.on_row(self)


def _record_error(
    report: Report,
    row: list[object],
    exc: Exception,
    failed: dict[tuple[int, str], str] | None,
    key: tuple[int, str] | None,
) -> None:
    message = f"{type(exc).__name__}: {exc}".replace("|", "/").replace("\n", " ")
    print("".join(traceback.format_exception(exc)), flush=True)
    if failed is not None and key is not None:
        failed[key] = message[:200]
    report.add([*row, f"error: {message[:300]}"])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


def measure(
    cases: Sequence[tuple[int, int]],
    specs: Sequence[EngineSpec],
    *,
    make_weights: Callable[[Path, int], Any],
    make_input: Callable[[int, int], np.ndarray],
    repeats: int,
    budget_s: float,
    report: Report,
    cuda: Any = None,
) -> None:
    """Fill ``report`` with one row per (case, engine); ``cuda`` is ``torch.cuda`` on a GPU."""
    started_at = time.monotonic()

    def elapsed() -> float:
        return time.monotonic() - started_at

    cache_root = Path(tempfile.mkdtemp(prefix="ichnet-bench-"))
    weights_by_size: dict[int, Any] = {}
    engines: dict[tuple[int, str], Any] = {}
    build_s: dict[tuple[int, str], float] = {}
    failed: dict[tuple[int, str], str] = {}
    for size, slices in cases:
        if elapsed() > budget_s:
            report.add([size, slices, "-", "skipped: time budget"])
            continue
        try:
            if size not in weights_by_size:
                weights_by_size[size] = make_weights(cache_root, size)
            weights = weights_by_size[size]
            x = make_input(slices, size)
        except Exception as exc:
            report.add([size, slices, "-", f"setup failed: {exc!r}"])
            continue
        ready: list[EngineSpec] = []
        warmups: dict[str, float] = {}
        for spec in specs:
            key = (size, spec.label)
            row: list[object] = [size, slices, spec.label]
            if spec.unavailable:
                report.add([*row, f"n/a: {spec.unavailable}"])
            elif key in failed:
                report.add([*row, f"build failed: {failed[key]}"])
            elif elapsed() > budget_s:
                report.add([*row, "skipped: time budget"])
            else:
                try:
                    if key not in engines:
                        began = time.perf_counter()
                        engines[key] = spec.build(weights, cache_root / f"cache-{size}")
                        build_s[key] = time.perf_counter() - began
                    began = time.perf_counter()
                    engines[key].run_network(x[:WARMUP_SLICES])
                    warmups[spec.label] = time.perf_counter() - began
                    ready.append(spec)
                except Exception as exc:
                    _record_error(report, row, exc, failed if key not in engines else None, key)
        # Timed runs round-robin over the engines, so a change of load on a shared machine
        # affects every engine alike instead of whichever happened to run then.
        samples: dict[str, list[float]] = {spec.label: [] for spec in ready}
        outputs: dict[str, Any] = {}
        peaks: dict[str, float] = {}
        errors: dict[str, Exception] = {}
        for _ in range(repeats):
            for spec in ready:
                label = spec.label
                if label in errors or (samples[label] and elapsed() > budget_s):
                    continue
                try:
                    if cuda is not None:
                        cuda.synchronize()
                        cuda.reset_peak_memory_stats()
                    began = time.perf_counter()
                    outputs[label] = engines[(size, label)].run_network(x)
                    samples[label].append(time.perf_counter() - began)
                    if cuda is not None:
                        peaks[label] = max(peaks.get(label, 0.0), cuda.max_memory_allocated())
                except Exception as exc:
                    errors[label] = exc
                finally:
                    if cuda is not None:
                        cuda.empty_cache()
        reference = None
        reference_best = None
        for spec in ready:
            label = spec.label
            row = [size, slices, label]
            if label in errors or not samples[label]:
                _record_error(
                    report, row, errors.get(label, RuntimeError("no timed run")), None, None
                )
                continue
            output = outputs[label]
            best, median = min(samples[label]), float(np.median(samples[label]))
            if reference is None:
                reference, reference_best = output, best
            seg_err = float(np.abs(output.seg_probs - reference.seg_probs).max())
            cls_err = max(
                float(np.abs(_sigmoid(a) - _sigmoid(b)).max())
                for a, b in (
                    (output.slice_logits, reference.slice_logits),
                    (output.subject_logits, reference.subject_logits),
                )
            )
            agreement = float(np.mean(output.seg_probs.argmax(1) == reference.seg_probs.argmax(1)))
            ok = max(seg_err, cls_err) <= max(spec.atol, 1e-6)
            ok = ok and agreement >= MIN_LABEL_AGREEMENT
            report.add(
                [
                    *row,
                    f"{build_s[(size, label)]:.1f}",
                    f"{best:.3f}",
                    f"{median:.3f}",
                    f"{reference_best / best:.2f}",
                    f"{slices / best:.1f}",
                    f"{seg_err:.1e}",
                    f"{cls_err:.1e}",
                    f"{agreement:.5f}",
                    "ok" if ok else "FAIL",
                    f"{peaks[label] / 2**20:.0f}" if label in peaks else "-",
                    f"{len(samples[label])} run(s); warm-up {warmups[label]:.2f} s",
                ]
            )
