"""``engine: auto``: measure the engines that can run here and remember the choice.

1. TensorRT when it is installed and a CUDA device is present (FP16 engines; nothing else comes
   close on a GPU, and building it for a race would cost minutes);
2. otherwise every other engine that can be built (optimised PyTorch, ONNX Runtime) runs the
   same probe (``AUTO_PROBE_SLICES`` random slices at the model's input size, best of
   ``AUTO_PROBE_RUNS`` after a warm-up) and the fastest wins. The measurement, with the
   machine's CPU/GPU name and the library versions, is stored in ``cache_dir/auto-engine.json``
   and reused by later starts on the same machine and weights, so only the first start pays
   for it (delete the file to measure again). On the development CPU (AVX512_BF16 + AMX) torch
   bfloat16 wins when the machine is otherwise idle and ONNX Runtime when another job shares
   the cores (docs/benchmarks.md), which is why this is measured and not a fixed rule. ONNX
   Runtime without a CUDA provider is not considered on a machine with a GPU.

A decision measured while other processes used more than :data:`BUSY_SHARE` of the CPUs
(``/proc/stat`` minus this process, over the probe) is stored as provisional: it would keep a
node that started during a busy hour on the engine that is only faster under load. A later
start samples the CPUs for :data:`QUIET_SAMPLE_S` and measures again once they are quiet.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from ichnet_core.durable import write_atomic
from ichnet_core.inference.base import (
    AUTO_PREFERENCE,
    EngineBuilder,
    EngineName,
    EngineOptions,
    EngineUnavailableError,
    NetworkEngine,
)

if TYPE_CHECKING:
    from ichnet_core.models.weights import ModelWeights

logger = logging.getLogger(__name__)

#: The auto probe: slices, timed runs (after one warm-up), and the file keeping the decision.
AUTO_PROBE_SLICES: Final[int] = 8
AUTO_PROBE_RUNS: Final[int] = 2
AUTO_DECISION_FILE: Final[str] = "auto-engine.json"
_AUTO_DECISION_FORMAT: Final[str] = "ichnet-auto-engine/1"
_PROBE_SEED: Final[int] = 0
#: Share of all CPUs that other processes may use during the probe for a final decision.
BUSY_SHARE: Final[float] = 0.25
#: How long a start with a provisional decision samples whether the CPUs are quiet now.
QUIET_SAMPLE_S: Final[float] = 0.25
#: ``/proc/stat`` cpu fields: user nice system idle iowait irq softirq steal (guest time is
#: already in user/nice).
_STAT_FIELDS: Final[int] = 8
_IDLE_FIELDS: Final[tuple[int, int]] = (3, 4)


def _cpu_seconds() -> tuple[float, float] | None:
    """Busy CPU seconds of all processes since boot (``/proc/stat``) and this process's own;
    ``None`` where the kernel does not provide them."""
    try:
        fields = Path("/proc/stat").read_text(encoding="ascii").split("\n", 1)[0].split()
        ticks = [int(v) for v in fields[1 : 1 + _STAT_FIELDS]]
        hertz = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
    if fields[0] != "cpu" or len(ticks) < _STAT_FIELDS:
        return None
    busy = sum(ticks) - sum(ticks[i] for i in _IDLE_FIELDS)
    own = os.times()
    return busy / hertz, own.user + own.system


class OtherCpuUse:
    """CPU share (of all CPUs) used by other processes since this object was made."""

    def __init__(self) -> None:
        self._start = _cpu_seconds()
        self._started = time.monotonic()

    def share(self) -> float | None:
        """Others' share in [0, 1], or ``None`` when it cannot be measured here."""
        end = _cpu_seconds()
        wall = time.monotonic() - self._started
        if self._start is None or end is None or wall <= 0:
            return None
        others = (end[0] - self._start[0]) - (end[1] - self._start[1])
        return min(1.0, max(0.0, others / (wall * (os.cpu_count() or 1))))


def _quiet_now() -> bool:
    """Whether other processes leave the CPUs to the probe now (sampled for a moment)."""
    sample = OtherCpuUse()
    time.sleep(QUIET_SAMPLE_S)
    share = sample.share()
    return share is not None and share <= BUSY_SHARE


def _cpu_model() -> str:
    try:
        for line in (
            Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace").splitlines()
        ):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _decision_context(weights: ModelWeights, options: EngineOptions) -> dict[str, Any]:
    """What an auto decision depends on: machine, libraries, weights, chunking."""
    import importlib.metadata

    import torch

    def version(package: str) -> str:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return "absent"

    return {
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "onnxruntime": version("onnxruntime")
        if version("onnxruntime-gpu") == "absent"
        else version("onnxruntime-gpu"),
        "weights_sha256": weights.sha256,
        "chunk_slices": options.chunk_slices,
    }


def _read_decision(path: Path | None, context: Mapping[str, Any]) -> dict[str, Any] | None:
    if path is None or not path.is_file():
        return None
    try:
        decision = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        logger.warning("engine auto: ignoring unreadable %s: %s", path, exc)
        return None
    if (
        not isinstance(decision, dict)
        or decision.get("format") != _AUTO_DECISION_FORMAT
        or decision.get("context") != dict(context)
    ):
        return None
    return decision


def _write_decision(path: Path | None, decision: Mapping[str, Any]) -> None:
    if path is None:
        return
    write_atomic(path, json.dumps(decision, indent=2, sort_keys=True).encode("utf-8"))


def probe_seconds(engine: NetworkEngine, *, slices: int = AUTO_PROBE_SLICES) -> float:
    """Best of :data:`AUTO_PROBE_RUNS` timed runs (after a warm-up) on random slices."""
    rng = np.random.default_rng(_PROBE_SEED)
    size = engine.input_size
    x = rng.random((slices, 3, size, size), dtype=np.float32)
    engine.run_network(x)
    best = float("inf")
    for _ in range(AUTO_PROBE_RUNS):
        started = time.perf_counter()
        engine.run_network(x)
        best = min(best, time.perf_counter() - started)
    return best


def _gpu_without_onnxruntime_cuda() -> bool:
    """A CUDA device is present but the installed ONNX Runtime has no CUDA provider."""
    import torch

    if not torch.cuda.is_available():
        return False
    try:
        import onnxruntime
    except ImportError:
        return False  # the builder reports it
    return "CUDAExecutionProvider" not in onnxruntime.get_available_providers()


def auto_engine(
    weights: ModelWeights, options: EngineOptions, builders: Mapping[EngineName, EngineBuilder]
) -> NetworkEngine:
    """Build and return the fastest engine that runs here (see the module docstring)."""
    skipped: list[str] = []

    def unavailable(name: EngineName, reason: object) -> None:
        logger.info("engine auto: %s unavailable: %s", name.value, reason)
        skipped.append(f"{name.value}: {reason}")

    try:
        engine = builders[EngineName.TENSORRT](weights, options)
    except EngineUnavailableError as exc:
        unavailable(EngineName.TENSORRT, exc)
    else:
        logger.info("engine auto: using tensorrt (installed and a CUDA device is present)")
        return engine

    candidates: list[EngineName] = [n for n in AUTO_PREFERENCE if n is not EngineName.TENSORRT]
    decision_path = options.cache_dir / AUTO_DECISION_FILE if options.cache_dir else None
    context = _decision_context(weights, options)
    earlier = _read_decision(decision_path, context)
    if earlier is not None and earlier.get("provisional") and _quiet_now():
        logger.info(
            "engine auto: the earlier decision (%s) was measured while other processes used "
            "%.0f %% of the CPUs; measuring again now that they are quiet",
            earlier.get("choice"),
            100 * float(earlier.get("other_cpu_share") or 0.0),
        )
        earlier = None
    if earlier is not None and earlier.get("choice") in {c.value for c in candidates}:
        choice = EngineName(earlier["choice"])
        try:
            engine = builders[choice](weights, options)
        except EngineUnavailableError as exc:
            unavailable(choice, exc)
        else:
            logger.info(
                "engine auto: using %s, measured earlier on this machine (%s; %s)",
                choice.value,
                ", ".join(f"{k} {v:.3f} s" for k, v in earlier["timings_s"].items()),
                decision_path,
            )
            return engine

    built: dict[EngineName, NetworkEngine] = {}
    for name in candidates:
        if name is EngineName.ONNXRUNTIME and _gpu_without_onnxruntime_cuda():
            unavailable(name, "it would run on the CPU (no CUDA provider) while a GPU is present")
            continue
        try:
            built[name] = builders[name](weights, options)
        except EngineUnavailableError as exc:
            unavailable(name, exc)
    timings: dict[EngineName, float] = {}
    others = OtherCpuUse()
    for name, engine in built.items():
        try:
            timings[name] = probe_seconds(engine)
        except Exception as exc:  # an engine that cannot run the probe cannot run a series
            logger.warning("engine auto: %s failed the probe: %s", name.value, exc)
            unavailable(name, f"failed the probe: {exc}")
    if not timings:
        raise EngineUnavailableError("no inference engine can run here: " + "; ".join(skipped))
    choice = min(timings, key=lambda n: (timings[n], AUTO_PREFERENCE.index(n)))
    measured = {n.value: round(t, 4) for n, t in timings.items()}
    share = others.share()
    provisional = share is not None and share > BUSY_SHARE
    _write_decision(
        decision_path,
        {
            "format": _AUTO_DECISION_FORMAT,
            "context": context,
            "choice": choice.value,
            "timings_s": measured,
            "probe_slices": AUTO_PROBE_SLICES,
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "other_cpu_share": None if share is None else round(share, 3),
            "provisional": provisional,
        },
    )
    logger.info(
        "engine auto: using %s (%s): fastest on a %d-slice probe (%s); unavailable: %s%s",
        choice.value,
        built[choice].description,
        AUTO_PROBE_SLICES,
        ", ".join(f"{built[n].description} {t:.3f} s" for n, t in timings.items()),
        "; ".join(skipped) or "none",
        f"; provisional: other processes used {100 * share:.0f} % of the CPUs meanwhile, "
        "so a later start on quiet CPUs measures again"
        if provisional and share is not None
        else "",
    )
    return built[choice]
