"""Peak RSS of one job, stage by stage: read -> volume -> model input -> network -> labels -> results.

    .venv/bin/python bench/memory_budget.py [--slices 300] [--engines torch onnxruntime]
                                            [--train-config training/configs/cpu_diag.yaml]
                                            [--series-dir DIR] [--chunk-slices 16]

The series is a synthetic 512x512 head CT (``bench/memory.py``'s :func:`make_series`), written
once to a temporary folder. Each engine runs in a fresh subprocess that follows the node's job
path (``dicom_node.service``: ``read_datasets`` then the steps of ``analyse_series`` and of
``run_pipeline``) one stage at a time, with the engine cache (ONNX export, TensorRT plan) filled
beforehand by the parent process, as on a node that has started once: exporting is a one-off
that a running node does not repeat (it left ~250 MiB more resident in the job's process).
Before each stage the kernel's high-water mark is reset
(``5`` written to /proc/self/clear_refs), so the stage's ``VmHWM`` is its own peak; the job's
peak is the largest of them. ``--train-config`` uses random weights of that config's architecture (e.g. the
diagnostic-resolution model, 256 px at 1.0 mm), as ``bench/infer_real.py`` does; the default is
the node's bundled weights. The budget (issue 10) is 2 GB (2048 MiB) for the whole job.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from ichnet_core.inference.base import DEFAULT_CHUNK_SLICES

sys.path.insert(0, str(Path(__file__).resolve().parent))

BUDGET_MIB: Final[float] = 2048.0
#: The node's default selection allows up to this many slices; the bench raises it if needed.
STATUS_PATH: Final[Path] = Path("/proc/self/status")
CLEAR_REFS_PATH: Final[Path] = Path("/proc/self/clear_refs")


def _status_mib(field: str) -> float:
    for line in STATUS_PATH.read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no {field} in {STATUS_PATH}")


def _reset_peak() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so the next stage's peak is its own."""
    CLEAR_REFS_PATH.write_text("5")


def _stage(stages: list[dict[str, Any]], name: str, work: Callable[[], Any]) -> Any:
    _reset_peak()
    before = _status_mib("VmRSS")
    value = work()
    stages.append(
        {
            "stage": name,
            "rss_before": before,
            "peak": _status_mib("VmHWM"),
            "after": _status_mib("VmRSS"),
        }
    )
    return value


def run_job(
    series_dir: Path,
    engine_name: str,
    weights_path: str | None,
    sha256: str | None,
    chunk_slices: int,
    cache_dir: Path,
) -> dict[str, Any]:
    """The node's job path on ``series_dir`` with ``engine_name``; peak RSS per stage (MiB)."""
    import numpy as np
    from scipy.special import expit

    from dicom_node.config import SelectionSection
    from dicom_node.results import (
        ResultUids,
        Timings,
        build_result,
        build_seg,
        build_sr,
        measure_hemorrhage,
    )
    from dicom_node.results.sc import build_key_images
    from dicom_node.selection import select_series
    from dicom_node.workflow import (
        SEG_SERIES_NUMBER_BASE,
        SR_SERIES_NUMBER_BASE,
        model_identity,
        read_datasets,
    )
    from ichnet_core.imaging.volume import build_volume
    from ichnet_core.inference.engine import create_engine
    from ichnet_core.inference.pipeline import SourceLabels, prepare_input
    from ichnet_core.prediction import Prediction

    stages: list[dict[str, Any]] = []
    weights = _load_weights(weights_path, sha256)
    engine = _stage(
        stages,
        "engine start",
        lambda: create_engine(engine_name, weights, cache_dir=cache_dir, chunk_slices=chunk_slices),
    )
    paths = sorted(series_dir.glob("*.dcm"))
    datasets, _ = _stage(stages, "read series", lambda: read_datasets(paths))
    rules = SelectionSection(max_slices=max(len(paths), SelectionSection().max_slices))
    selection = _stage(stages, "select", lambda: select_series(datasets, rules))
    if not selection.accepted:
        raise SystemExit(f"series refused: {selection.reason}")
    volume = _stage(stages, "volume (HU)", lambda: build_volume(datasets))
    # As PipelineEngine.predict runs it (run_pipeline): the model input is dropped once the
    # network has run, and the decoder's chunks go straight to SourceLabels (the sink).
    held: dict[str, Any] = {}
    held["x"], mapping = _stage(stages, "model input", lambda: prepare_input(volume, engine.grid))
    decided = SourceLabels(volume.num_slices, mapping)
    output = _stage(
        stages, "network + labels", lambda: engine.run_network(held.pop("x"), decided.add)
    )
    labels, compartments = decided.result()
    prediction = Prediction(
        labels=labels,
        slice_probabilities=expit(output.slice_logits).astype(np.float32),
        subject_probabilities=expit(output.subject_logits).astype(np.float32),
        compartments=compartments,
    )
    model = model_identity(weights)
    uids = ResultUids.new(volume.series_instance_uid, model, 1)
    volumes = _stage(stages, "volumes", lambda: measure_hemorrhage(volume, prediction))
    seg = _stage(
        stages,
        "SEG",
        lambda: build_seg(
            volume,
            prediction,
            model,
            series_instance_uid=uids.seg_series_instance_uid,
            sop_instance_uid=uids.seg_sop_instance_uid,
            series_number=SEG_SERIES_NUMBER_BASE,
        ),
    )
    sr = _stage(
        stages,
        "SR",
        lambda: build_sr(
            volume,
            prediction,
            seg,
            model,
            volumes=volumes,
            operating_points=weights.operating_points,
            series_instance_uid=uids.sr_series_instance_uid,
            sop_instance_uid=uids.sr_sop_instance_uid,
            series_number=SR_SERIES_NUMBER_BASE,
        ),
    )
    _stage(
        stages,
        "SC key images",
        lambda: build_key_images(
            volume,
            prediction,
            model,
            volumes=volumes,
            seg_sop_instance_uid=uids.seg_sop_instance_uid,
            series_number=10000,
            present=weights.operating_points.present(prediction.subject_probabilities),
        ),
    )
    _stage(
        stages,
        "result.json",
        lambda: build_result(
            volume,
            prediction,
            volumes=volumes,
            operating_points=weights.operating_points,
            engine=engine.name,
            model=model,
            timings=Timings(volume=0.0, inference=0.0, results=0.0),
        ),
    )
    with tempfile.TemporaryDirectory(prefix="ichnet-out-") as out:
        _stage(
            stages,
            "write SEG + SR",
            lambda: (seg.save_as(Path(out) / "seg.dcm"), sr.save_as(Path(out) / "sr.dcm")),
        )
    return {
        "engine": engine.name,
        "slices": volume.num_slices,
        "input_size": engine.grid.input_size,
        "stages": stages,
        "peak": max(s["peak"] for s in stages),
    }


def _weights(train_config: Path | None, folder: Path) -> tuple[str | None, str | None]:
    if train_config is None:
        return None, None
    import yaml
    from bench_weights import make_weights

    overrides = dict(yaml.safe_load(train_config.read_text())["model"]["overrides"])
    size = int(overrides.pop("input_size"))
    weights = make_weights(folder, size, **overrides)
    return str(weights.path), weights.sha256


def _fill_engine_cache(
    engine_name: str, weights_path: str | None, sha256: str | None, cache_dir: Path
) -> None:
    """Build ``engine_name`` once here, so its export is in ``cache_dir`` before the job runs."""
    from ichnet_core.inference.engine import create_engine

    create_engine(engine_name, _load_weights(weights_path, sha256), cache_dir=cache_dir, warm=False)


def _load_weights(weights_path: str | None, sha256: str | None) -> Any:
    """The weights file given on the command line (the bundled one when empty), checked."""
    from ichnet_core.models.weights import load_weights

    return load_weights(Path(weights_path) if weights_path else None, expected_sha256=sha256)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--engines", nargs="+", default=["torch", "onnxruntime"])
    parser.add_argument("--train-config", type=Path, default=None)
    parser.add_argument("--series-dir", type=Path, default=None, help="reuse a written series")
    parser.add_argument(
        "--chunk-slices",
        type=int,
        default=DEFAULT_CHUNK_SLICES,
        help="slices per encoder/decoder call (the node's model.chunk_slices)",
    )
    parser.add_argument(
        "--child", nargs=5, metavar=("SERIES", "ENGINE", "WEIGHTS", "SHA256", "CACHE")
    )
    args = parser.parse_args(argv)
    if args.child:
        series, engine, weights, sha256, cache = args.child
        report = run_job(
            Path(series), engine, weights or None, sha256 or None, args.chunk_slices, Path(cache)
        )
        print("RESULT " + json.dumps(report), flush=True)
        return 0
    from memory import make_series

    with tempfile.TemporaryDirectory(prefix="ichnet-budget-") as tmp:
        work = Path(tmp)
        series_dir = args.series_dir or work / "series"
        if args.series_dir is None:
            make_series(series_dir, args.slices)
        weights, sha256 = _weights(args.train_config, work)
        failed = False
        for engine in args.engines:
            _fill_engine_cache(engine, weights, sha256, work / "engine-cache")
            command = [
                sys.executable,
                __file__,
                "--chunk-slices",
                str(args.chunk_slices),
                "--child",
                str(series_dir),
                engine,
                weights or "",
                sha256 or "",
                str(work / "engine-cache"),
            ]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
            if done.returncode != 0 or not lines:
                print(f"{engine}: failed ({done.returncode})\n{done.stderr[-3000:]}")
                failed = True
                continue
            report = json.loads(lines[-1][len("RESULT ") :])
            print(
                f"\nengine {report['engine']}, {report['slices']} slices, model input "
                f"{report['input_size']} px, {args.chunk_slices} slices per chunk"
            )
            print(f"{'stage':<18}{'RSS before MiB':>16}{'peak MiB':>10}{'RSS after MiB':>15}")
            for s in report["stages"]:
                print(
                    f"{s['stage']:<18}{s['rss_before']:>16.0f}{s['peak']:>10.0f}{s['after']:>15.0f}"
                )
            verdict = "within" if report["peak"] <= BUDGET_MIB else "OVER"
            print(f"job peak {report['peak']:.0f} MiB: {verdict} the {BUDGET_MIB:.0f} MiB budget")
            failed |= report["peak"] > BUDGET_MIB
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
