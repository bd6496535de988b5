"""Engine benchmark on this CPU: torch float32 eager vs every optimised engine, as ratios.

    .venv/bin/python bench/engines.py [--sizes 256 512] [--slices 28 300] [--write-docs]

Same model (default ICHNet architecture, random "decisive" weights), same phantom input, one run
(bench/engine_matrix.py). Engines: torch float32 eager (the reference), torch float32 with
channels-last + folded batch norms, torch bfloat16 autocast + channels-last + folded batch norms
(what ``engine: torch`` runs on a CPU with AVX512_BF16/AMX), ONNX Runtime CPU float32.
Timings are of ``run_network`` (the network; pre/post-processing is shared by all engines).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_weights import make_weights, phantom_input
from common import markdown_table, plain_table, section_text, update_docs
from engine_matrix import HEADERS, EngineSpec, Report, measure

from ichnet_core.inference.base import DEFAULT_CHUNK_SLICES
from ichnet_core.inference.onnx_engine import CPU_PROVIDER, OnnxRuntimeEngine
from ichnet_core.inference.torch_engine import (
    Precision,
    TorchEngine,
    TorchSettings,
    cpu_supports_bf16,
)

FP32_ATOL: Final[float] = 1e-3
BF16_ATOL: Final[float] = 2e-2
#: Slice counts at or above this get one timed run (they take minutes on a small CPU).
LONG_SERIES: Final[int] = 100


def specs(chunk_slices: int) -> list[EngineSpec]:
    def torch_spec(label: str, settings: TorchSettings | None, atol: float) -> EngineSpec:
        return EngineSpec(
            label,
            lambda w, _c: TorchEngine(
                w, chunk_slices=chunk_slices, device="cpu", settings=settings
            ),
            atol,
        )

    bf16 = TorchSettings(Precision.BF16, channels_last=True, fold_batch_norm=True)
    return [
        torch_spec("torch fp32 eager (reference)", None, 0.0),
        torch_spec(
            "torch fp32 channels_last+fold_bn",
            TorchSettings(Precision.FP32, channels_last=True, fold_batch_norm=True),
            FP32_ATOL,
        ),
        EngineSpec(
            "torch bf16 channels_last+fold_bn",
            torch_spec("", bf16, BF16_ATOL).build,
            BF16_ATOL,
            None if cpu_supports_bf16() else "no AVX512_BF16/AMX on this CPU",
        ),
        EngineSpec(
            "onnxruntime cpu fp32",
            lambda w, cache: OnnxRuntimeEngine(
                w, chunk_slices=chunk_slices, cache_dir=cache, providers=[CPU_PROVIDER]
            ),
            FP32_ATOL,
        ),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--slices", type=int, nargs="+", default=[28, 300])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of short series")
    parser.add_argument("--chunk-slices", type=int, default=DEFAULT_CHUNK_SLICES)
    parser.add_argument("--budget-s", type=float, default=3600.0)
    parser.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument("--section", default="engines", help="docs section to replace")
    parser.add_argument("--title", default="Engines on the CPU")
    args = parser.parse_args(argv)

    report = Report()
    print(plain_table(HEADERS, []), flush=True)
    engine_specs = specs(args.chunk_slices)
    cases = [(size, slices) for slices in sorted(args.slices) for size in sorted(args.sizes)]
    for case in cases:
        measure(
            [case],
            engine_specs,
            make_weights=lambda folder, size: make_weights(folder, size),
            make_input=lambda slices, size: phantom_input(slices, size),
            repeats=1 if case[1] >= LONG_SERIES else args.repeats,
            budget_s=args.budget_s,
            report=report,
        )
    table = markdown_table(HEADERS, report.rows)
    print("\n" + table)
    if args.write_docs:
        notes = (
            "Default ICHNet architecture (widths 16-128) at each input size with random "
            "'decisive' weights (outputs spread like a trained model's), smooth head phantom input, "
            f"{args.chunk_slices} slices per encoder/decoder chunk, network only (`run_network`). "
            "`x vs fp32` = reference time / engine time. Series of "
            f">= {LONG_SERIES} slices were timed once (after a {20}-slice warm-up), shorter ones "
            f"best of {args.repeats}. The machine is shared with other jobs: single timings can be "
            "off by tens of percent."
        )
        update_docs(args.section, section_text(args.title, table, notes=notes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
