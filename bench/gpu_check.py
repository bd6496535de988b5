"""GPU check: parity and speed of every engine on the staged model, in one bounded run.

Run through ``bench/gpu_check.sh`` (which adds the hard time limit). Environment:

* ``DEVICE``: ``cuda`` (default) or ``cpu`` (a tiny subset that proves the script runs here);
* ``BUDGET_S``: seconds after which remaining measurements are skipped (default 400 on cuda);
* ``OUT``: folder for ``gpu_check.md`` (default ``./gpu_check_out``);
* ``REPEATS``: timed runs per measurement (default 3 on cuda, 1 on cpu);
* ``BLOCK_IMPORTS``: comma-separated modules made unimportable first (the cpu mode blocks
  pydicom and scipy to prove the engines import without them, as on the GPU machine).

Per input size (256, 512) the default ICHNet architecture gets random "decisive" weights and a
phantom input (bench/bench_weights.py); cases are 28 and 300 slices. Engines on CUDA: torch
float32 (reference, TF32 off), torch fp16, torch fp16 + CUDA graphs (what ``engine: torch``
runs), torch fp16 + torch.compile, ONNX Runtime CUDA (if the CUDA provider is installed),
TensorRT (if importable). The loop is bench/engine_matrix.py; the table is rewritten to
``$OUT/gpu_check.md`` after every row, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Any, Final

for _blocked in filter(None, os.environ.get("BLOCK_IMPORTS", "").split(",")):
    sys.modules[_blocked.strip()] = None  # type: ignore[assignment]  # importing it now fails

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_description, markdown_table, now_utc, plain_table  # noqa: E402
from engine_matrix import HEADERS, EngineSpec, Report, measure  # noqa: E402

DEVICE: Final[str] = os.environ.get("DEVICE", "cuda")
ON_CUDA: Final[bool] = DEVICE == "cuda"
BUDGET_S: Final[float] = float(os.environ.get("BUDGET_S", "400" if ON_CUDA else "240"))
REPEATS: Final[int] = int(os.environ.get("REPEATS", "3" if ON_CUDA else "1"))
OUT_DIR: Final[Path] = Path(os.environ.get("OUT", "gpu_check_out"))
CHUNK_SLICES: Final[int] = 16
#: (input size, slices), cheapest first so a short budget still covers the basics.
CASES: Final[tuple[tuple[int, int], ...]] = (
    ((256, 28), (512, 28), (256, 300), (512, 300)) if ON_CUDA else ((128, 4), (128, 9))
)
FP32_ATOL: Final[float] = 1e-3
REDUCED_ATOL: Final[float] = 2e-2


def engine_specs() -> list[EngineSpec]:
    """The engines to compare on this device, unavailable ones with their reason."""
    from ichnet_core.inference.onnx_engine import CPU_PROVIDER, CUDA_PROVIDER, OnnxRuntimeEngine
    from ichnet_core.inference.torch_engine import Precision, TorchEngine, TorchSettings

    device = "cuda" if ON_CUDA else "cpu"

    def torch_spec(label: str, settings: TorchSettings | None, atol: float) -> EngineSpec:
        return EngineSpec(
            label,
            lambda w, _cache: TorchEngine(
                w, chunk_slices=CHUNK_SLICES, device=device, settings=settings
            ),
            atol,
        )

    def ort_spec(label: str, providers: list[str], atol: float, missing: str | None) -> EngineSpec:
        return EngineSpec(
            label,
            lambda w, cache: OnnxRuntimeEngine(
                w, chunk_slices=CHUNK_SLICES, cache_dir=cache, providers=providers
            ),
            atol,
            missing,
        )

    try:
        import onnxruntime

        available = onnxruntime.get_available_providers()
        ort_missing: str | None = None
    except ImportError as exc:
        available, ort_missing = [], f"onnxruntime not importable: {exc}"
    if not ON_CUDA:
        return [
            torch_spec("torch fp32 (reference)", None, 0.0),
            torch_spec("torch optimized", TorchSettings.optimized("cpu"), REDUCED_ATOL),
            ort_spec("onnxruntime cpu fp32", [CPU_PROVIDER], FP32_ATOL, ort_missing),
        ]
    try:
        import tensorrt  # noqa: F401

        trt_missing = None
    except ImportError as exc:
        trt_missing = f"tensorrt not importable: {exc}"

    def build_tensorrt(w: Any, cache: Path) -> Any:
        from ichnet_core.inference.tensorrt_engine import TensorRTEngine

        return TensorRTEngine(w, chunk_slices=CHUNK_SLICES, cache_dir=cache)

    half = TorchSettings(Precision.FP16, channels_last=True, fold_batch_norm=True)
    compiled = TorchSettings(Precision.FP16, channels_last=True, fold_batch_norm=True, compile=True)
    cuda_missing = ort_missing or (
        None if CUDA_PROVIDER in available else f"no CUDA provider in {available}"
    )
    return [
        torch_spec("torch fp32 (reference)", None, 0.0),
        torch_spec("torch fp16", half, REDUCED_ATOL),
        torch_spec("torch fp16 + CUDA graphs", TorchSettings.optimized("cuda"), REDUCED_ATOL),
        ort_spec("onnxruntime cuda fp32", [CUDA_PROVIDER, CPU_PROVIDER], FP32_ATOL, cuda_missing),
        EngineSpec("tensorrt fp16", build_tensorrt, REDUCED_ATOL, trt_missing),
        torch_spec("torch fp16 + torch.compile", compiled, REDUCED_ATOL),  # slowest to build
    ]


def write(report: Report) -> None:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    text = (
        "# GPU check\n\n"
        f"- machine: {machine_description()}\n- date: {now_utc()}\n"
        f"- command: `DEVICE={DEVICE} BUDGET_S={BUDGET_S:.0f} REPEATS={REPEATS} "
        "bash bench/gpu_check.sh`\n\n"
        + markdown_table(HEADERS, report.rows)
        + "\n\n"
        + "\n".join(f"- {n}" for n in report.notes)
        + "\n"
    )
    (OUT_DIR / "gpu_check.md").write_text(text, encoding="utf-8")


def main() -> int:
    report = Report(on_row=write)
    print(f"gpu_check: DEVICE={DEVICE} budget {BUDGET_S:.0f} s, repeats {REPEATS}", flush=True)
    try:
        import torch
        from bench_weights import make_weights, phantom_input

        specs = engine_specs()
    except Exception as exc:
        print(traceback.format_exc(), flush=True)
        report.notes.append(f"cannot import the model stack: {exc!r}")
        write(report)
        return 1
    if ON_CUDA and not torch.cuda.is_available():
        report.notes.append("DEVICE=cuda but torch.cuda.is_available() is False")
        write(report)
        return 1
    if ON_CUDA:  # the reference must be true float32, not TF32 convolutions
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    report.notes += [
        "weights: default ICHNet architecture (widths 16-128) at each input size, random "
        "'decisive' initialisation (outputs spread over [0, 1]), untrained; input: a smooth head "
        "phantom (bench/bench_weights.py)",
        f"network only (run_network), {CHUNK_SLICES} slices per encoder/decoder chunk; x vs fp32 "
        "= reference best / engine best; parity: max|dp| <= 1e-3 (fp32) or 2e-2 (fp16/bf16) "
        "and labels equal on >= 99.9 % of pixels at model resolution",
        "reference = torch float32 eager on the same device with TF32 off; peak GPU MiB = "
        "torch.cuda.max_memory_allocated during the timed runs (TensorRT's own memory not counted)",
    ]
    print(machine_description(), flush=True)
    print(plain_table(HEADERS, []), flush=True)
    measure(
        CASES,
        specs,
        make_weights=lambda folder, size: make_weights(folder, size),
        make_input=lambda slices, size: phantom_input(slices, size),
        repeats=REPEATS,
        budget_s=BUDGET_S,
        report=report,
        cuda=torch.cuda if ON_CUDA else None,
    )
    write(report)
    print(f"\nwrote {OUT_DIR / 'gpu_check.md'}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
