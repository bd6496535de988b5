"""``ichnet-train`` and ``ichnet-eval``: thin argparse wrappers around the typed API.

::

    ichnet-train [train] --config training/configs/cpu_small.yaml [--no-resume] [--max-steps N]
    torchrun --nproc-per-node 8 -m training.cli train --config training/configs/gpu8_rsna.yaml
    ichnet-train compare --config training/configs/compare_cpu.yaml
    ichnet-train prepare --config training/configs/cpu_small.yaml     # fill the synthetic cache
    ichnet-train cache --config training/configs/gpu8_rsna.yaml --workers 32   # series cache
    ichnet-train operating-points --config training/configs/cpu_small.yaml [--checkpoint C]
    ichnet-train export --checkpoint runs/x/checkpoints/best.pt --out weights.pt --version 1.0.0 \
        [--operating-points runs/x/operating_points.json]
    ichnet-eval --config training/configs/cpu_small.yaml [--checkpoint C | --weights W] [--split test]
        [--operating-points weights | FILE]

Exit status: 0 success, 2 unusable configuration or arguments, 1 any other failure.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

import torch
from tqdm import tqdm

from ichnet_core.operating_points import OperatingPoints
from training.checkpoint import AVERAGED_FROM, average_checkpoints, save_checkpoint
from training.config import ConfigError, TrainConfig, load_config
from training.data.build import build_split, open_dataset
from training.data.series_cache import SeriesCacheSource, cache_folder, fill_cache
from training.data.splits import Split
from training.device import autocast_dtype, resolve_device
from training.distributed import Distributed, from_environment, shutdown
from training.eval_report import format_markdown, write_cases, write_report
from training.evaluate import evaluate_model
from training.export import OPERATING_POINTS_FORMAT, file_sha256
from training.operating_points import (
    ANY_MIN_SENSITIVITY,
    VOXEL_SWEEP,
    format_operating_points,
    select_operating_points,
)
from training.trainer import BEST_CHECKPOINT, LAST_CHECKPOINT, Trainer, load_trained_model

logger = logging.getLogger(__name__)

EXIT_OK: Final[int] = 0
EXIT_FAILURE: Final[int] = 1
EXIT_USAGE: Final[int] = 2
SUBCOMMANDS: Final[tuple[str, ...]] = (
    "train",
    "cache",
    "compare",
    "prepare",
    "export",
    "operating-points",
    "average",
    "recalibrate-bn",
)
#: Default file name of ``ichnet-train operating-points`` under the run's output_dir.
OPERATING_POINTS_FILE: Final[str] = "operating_points.json"


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _load(
    path: Path, output_dir: Path | None, device: str | None, threads: int | None = None
) -> TrainConfig:
    config = load_config(path)
    update: dict[str, object] = {}
    if output_dir is not None:
        update["output_dir"] = output_dir
    if device is not None:
        update["device"] = device
    if threads is not None:
        update["cpu_threads"] = threads
    return config.model_copy(update=update) if update else config


def with_synthetic_cases(config: TrainConfig, split: Split, count: int) -> TrainConfig:
    """``config`` with ``count`` synthetic cases in ``split`` (seeds of the split's own block)."""
    synthetic = config.data.synthetic
    if synthetic is None or count < 1:
        raise ValueError(f"--cases {count}: needs data.synthetic in the config and a count >= 1")
    field = {Split.TRAIN: "train_cases", Split.VAL: "val_cases", Split.TEST: "test_cases"}[split]
    synthetic = synthetic.model_copy(update={field: count})
    return config.model_copy(
        update={"data": config.data.model_copy(update={"synthetic": synthetic})}
    )


def _runtime(args: argparse.Namespace) -> tuple[TrainConfig, torch.device]:
    """The config of ``--config`` with ``--device``/``--threads`` applied, and its device."""
    config = _load(args.config, None, args.device, args.threads)
    if config.cpu_threads is not None:
        torch.set_num_threads(config.cpu_threads)
    return config, resolve_device(config.device)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="training config (YAML)")
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )


def _fit(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="ichnet-train", description="Train ICHNet or a baseline.")
    _common(parser)
    parser.add_argument("--output-dir", type=Path, help="override output_dir")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="override device")
    parser.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint")
    parser.add_argument("--max-steps", type=int, help="stop after N optimiser steps (timing)")
    parser.add_argument("--threads", type=int, help="override cpu_threads")
    parser.add_argument(
        "--fast-kernels",
        action="store_true",
        help="allow non-deterministic GPU kernels (about 2.3x faster on an H100); the run "
        "stays resumable (determinism is not part of the config hash)",
    )
    parser.add_argument(
        "--prepare-workers",
        type=int,
        help="override data.prepare_workers (processes that generate the cases up front)",
    )
    parser.add_argument(
        "--max-minutes",
        type=float,
        help="time box: stop with a resumable checkpoint after this many minutes of training",
    )
    parser.add_argument(
        "--init-from",
        type=Path,
        help="resume from this checkpoint file (e.g. the committed one) unless the run folder "
        "already holds a newer one",
    )
    parser.add_argument(
        "--warm-start",
        type=Path,
        help="a new run starts from this checkpoint's network weights where names and shapes "
        "match (a changed architecture keeps the hours already trained); optimiser and step "
        "count start afresh; ignored when the run folder holds a run to resume",
    )
    args = parser.parse_args(argv)
    config = _load(args.config, args.output_dir, args.device, args.threads)
    distributed = from_environment(config.device)
    # One log (and one summary) per job: the other ranks speak only about problems.
    _setup_logging(args.log_level if distributed.is_main else "WARNING")
    try:
        return _train(config, args, distributed)
    finally:
        shutdown()


def _train(config: TrainConfig, args: argparse.Namespace, distributed: Distributed) -> int:
    if args.fast_kernels:
        config = config.model_copy(update={"deterministic": False})
    if args.prepare_workers is not None:
        data = config.data.model_copy(update={"prepare_workers": args.prepare_workers})
        config = config.model_copy(update={"data": data})
    summary = Trainer(
        config,
        resume=not args.no_resume,
        max_steps=args.max_steps,
        max_minutes=args.max_minutes,
        init_from=args.init_from,
        warm_start=args.warm_start,
        distributed=distributed,
    ).fit()
    if not distributed.is_main:
        return EXIT_OK
    print(
        json.dumps(
            {
                "output_dir": str(summary.output_dir),
                "epochs_completed": summary.epochs_completed,
                "steps": summary.steps,
                "best_val_loss": summary.best_val_loss,
                "last_checkpoint": str(summary.last_checkpoint),
                "best_checkpoint": str(summary.best_checkpoint)
                if summary.best_checkpoint
                else None,
                "mean_step_time_s": summary.mean_step_time_s,
                "mean_data_time_s": summary.mean_data_time_s,
            },
            indent=2,
        )
    )
    return EXIT_OK


def _compare(argv: Sequence[str]) -> int:
    from training.compare import run_compare

    parser = argparse.ArgumentParser(
        prog="ichnet-train compare", description="Train and evaluate ICHNet, ablations, baselines."
    )
    _common(parser)
    parser.add_argument("--max-steps", type=int, help="cap each run's optimiser steps")
    args = parser.parse_args(argv)
    _setup_logging(args.log_level)
    print(run_compare(args.config, max_steps=args.max_steps))
    return EXIT_OK


def _prepare(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="ichnet-train prepare", description="Generate and cache every case of every split."
    )
    _common(parser)
    args = parser.parse_args(argv)
    _setup_logging(args.log_level)
    config = load_config(args.config)
    for split in Split:
        source = build_split(config, split)
        for index in tqdm(range(len(source)), desc=f"prepare {split.value}"):
            source.load(index)
    return EXIT_OK


def _cache(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="ichnet-train cache",
        description="Decode every series of the config's public datasets once into the series "
        "cache (int16 HU .npz under cache_dir/series), for data.series_cache: true.",
    )
    _common(parser)
    parser.add_argument("--workers", type=int, default=1, help="processes decoding in parallel")
    args = parser.parse_args(argv)
    _setup_logging(args.log_level)
    config = load_config(args.config)
    if not config.data.datasets:
        raise ValueError(f"{args.config}: no data.datasets, nothing to cache")
    for section in config.data.datasets:
        folder = cache_folder(config.data.cache_dir, section.kind, section.root)
        source = SeriesCacheSource(open_dataset(section), folder)
        report = fill_cache(source, args.workers)
        print(
            f"{section.kind} {section.root}: {report.cases_written} series written "
            f"({report.slices_written} slices), {report.cases_cached} already cached, "
            f"{report.seconds:.1f} s, {report.slices_per_second_per_worker:.0f} slices/s per "
            f"worker ({report.workers} workers) -> {source.folder}"
        )
    return EXIT_OK


def _average(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="ichnet-train average",
        description="Average the (moving-average) weights of checkpoints of one run into a "
        "checkpoint for operating-points, ichnet-eval and export (not for resuming).",
    )
    parser.add_argument("checkpoints", type=Path, nargs="+", help="two or more, one config")
    parser.add_argument("--out", type=Path, required=True, help="checkpoint to write")
    args = parser.parse_args(argv)
    payload = average_checkpoints(list(args.checkpoints))
    save_checkpoint(args.out, payload)
    steps = ", ".join(str(entry["step"]) for entry in payload[AVERAGED_FROM])
    print(f"{args.out}: mean of the weights at steps {steps}")
    return EXIT_OK


def _recalibrate(argv: Sequence[str]) -> int:
    from training.recalibrate import recalibrated_checkpoint

    parser = argparse.ArgumentParser(
        prog="ichnet-train recalibrate-bn",
        description="Recompute a checkpoint's BatchNorm statistics on whole training series "
        "(training.recalibrate) into a checkpoint for operating-points, ichnet-eval and export.",
    )
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="checkpoint to write")
    parser.add_argument("--cases", type=int, default=48, help="training series (default 48)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    _setup_logging("INFO")
    torch.set_num_threads(args.threads)
    save_checkpoint(
        args.out, recalibrated_checkpoint(args.checkpoint, args.cases, torch.device("cpu"))
    )
    print(f"{args.out}: BatchNorm statistics over {args.cases} training series")
    return EXIT_OK


def _export(argv: Sequence[str]) -> int:
    from training.export import export_checkpoint

    parser = argparse.ArgumentParser(
        prog="ichnet-train export", description="Write a checkpoint as a bundled weights file."
    )
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="weights file to write")
    parser.add_argument("--version", required=True, help="weights version, e.g. 1.0.0+synthetic")
    parser.add_argument(
        "--trained-on", default="synthetic head CT from ichnet_core.synthetic (no patient data)"
    )
    parser.add_argument(
        "--description",
        default="ICHNet trained on synthetic head CT only; research use, not for clinical use",
    )
    parser.add_argument("--evaluation", type=Path, help="metrics.json of ichnet-eval to record")
    parser.add_argument(
        "--operating-points",
        type=Path,
        help="file of `ichnet-train operating-points` for this checkpoint; without it the "
        "weights call every output present from 0.5",
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    args = parser.parse_args(argv)
    _setup_logging(args.log_level)
    result = export_checkpoint(
        args.checkpoint,
        args.out,
        version=args.version,
        trained_on=args.trained_on,
        description=args.description,
        evaluation=args.evaluation,
        operating_points=args.operating_points,
    )
    print(
        json.dumps(
            {
                "path": str(result.path),
                "sha256": result.sha256,
                "size_bytes": result.size_bytes,
                "manifest_files_entry": {result.path.name: result.manifest_entry},
            },
            indent=2,
        )
    )
    return EXIT_OK


def _operating_points(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="ichnet-train operating-points",
        description="Choose per-output decision thresholds on the validation split "
        "(any: highest specificity with sensitivity >= 0.95; subtypes: Youden's J; hemorrhage "
        "voxels: the probability whose median volume error is closest to zero) and write "
        "them for `ichnet-train export --operating-points`.",
    )
    _common(parser)
    parser.add_argument("--checkpoint", type=Path, help="training checkpoint (default: best)")
    parser.add_argument("--split", choices=["val", "test"], default="val")
    parser.add_argument(
        "--cases",
        type=int,
        help="synthetic cases of the split to use instead of the config's count: more seeds of "
        "the same disjoint block, because sensitivity >= 0.95 cannot be measured on the few "
        "positives a run validates on (not part of the config hash)",
    )
    parser.add_argument(
        "--out", type=Path, help=f"JSON to write (default: <output_dir>/{OPERATING_POINTS_FILE})"
    )
    parser.add_argument(
        "--any-min-sensitivity",
        type=float,
        default=ANY_MIN_SENSITIVITY,
        help="sensitivity the `any` threshold must reach on the split",
    )
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="override device")
    parser.add_argument("--threads", type=int, help="override cpu_threads")
    args = parser.parse_args(argv)
    _setup_logging(args.log_level)
    config, device = _runtime(args)
    checkpoint = _checkpoint_of(config, args.checkpoint)
    model, grid, _ = load_trained_model(checkpoint, device)
    split = Split(args.split)
    if args.cases is not None:
        config = with_synthetic_cases(config, split, args.cases)
    cases = build_split(config, split)
    if len(cases) == 0:
        raise ValueError(f"the {split.value} split of {args.config} holds no cases")
    if split is Split.TEST:
        logger.warning(
            "choosing operating points on the test split: its figures are no longer held out"
        )
    with torch.inference_mode():
        result = evaluate_model(
            model,
            cases,
            grid,
            device,
            autocast_dtype=autocast_dtype(config.optim.amp, device),
            progress=config.logging.progress_bar,
            description="operating points",
            voxel_sweep=VOXEL_SWEEP,
        )
    sha256 = file_sha256(checkpoint)
    source = (
        f"{split.value} split of {args.config.name} ({result.n_cases} cases), "
        f"checkpoint sha256 {sha256[:12]}"
    )
    selection = select_operating_points(
        result.scores,
        source=source,
        any_min_sensitivity=args.any_min_sensitivity,
        voxel_sweep=result.voxel_sweep,
    )
    points = selection.operating_points()
    payload = {
        "format": OPERATING_POINTS_FORMAT,
        "operating_points": points.to_metadata(),
        "selection": selection.to_dict(),
        "checkpoint": {"path": str(checkpoint), "sha256": sha256},
        "split": split.value,
        "n_cases": result.n_cases,
    }
    out = args.out or Path(config.output_dir) / OPERATING_POINTS_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    cases_csv = write_cases(result, out.with_name(f"{out.stem}_cases.csv"))
    print(format_operating_points(selection))
    print(f"operating points: {out}\nper case: {cases_csv}")
    return EXIT_OK


Handler = Callable[[Sequence[str]], int]


def _run(handler: Handler, argv: Sequence[str]) -> int:
    """Run a command; configuration problems exit 2, other expected failures exit 1."""
    try:
        return handler(argv)
    except ConfigError as exc:
        print(f"configuration error:\n{exc}", file=sys.stderr)
        return EXIT_USAGE
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def train_main(argv: Sequence[str] | None = None) -> int:
    """``ichnet-train`` [compare|prepare|export|operating-points|average|recalibrate-bn] ..."""
    args = list(sys.argv[1:] if argv is None else argv)
    handlers: dict[str, Handler] = {
        "train": _fit,
        "cache": _cache,
        "compare": _compare,
        "prepare": _prepare,
        "export": _export,
        "operating-points": _operating_points,
        "average": _average,
        "recalibrate-bn": _recalibrate,
    }
    if args and args[0] in SUBCOMMANDS:
        return _run(handlers[args[0]], args[1:])
    return _run(_fit, args)


def _evaluate(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="ichnet-eval", description="Evaluate a trained model on a held-out split."
    )
    _common(parser)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", type=Path, help="training checkpoint (default: best)")
    source.add_argument("--weights", type=Path, help="exported weights file instead")
    parser.add_argument("--weights-sha256", help="expected sha256 of --weights")
    parser.add_argument(
        "--split",
        choices=["train", "val", "test"],
        default="test",
        help="train: the first training series, whole and without augmentation; a model that "
        "scores no better there than on validation underfits",
    )
    parser.add_argument(
        "--cases",
        type=int,
        help="synthetic cases of the split instead of the config's count (more seeds of the "
        "split's own block; not part of the config hash)",
    )
    parser.add_argument(
        "--out", type=Path, help="report folder (default: <output_dir>/eval-<split>)"
    )
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="override device")
    parser.add_argument("--threshold", type=float, help="decision threshold (default: config)")
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=1000,
        help="case-bootstrap replicates for the 95 %% intervals of the headline figures (0: none)",
    )
    parser.add_argument(
        "--operating-points",
        metavar="weights|FILE",
        help="Table 2 at per-output thresholds: those stored in --weights (`weights`), or an "
        "`ichnet-train operating-points` file",
    )
    parser.add_argument("--threads", type=int, help="override cpu_threads")
    args = parser.parse_args(argv)
    _setup_logging(args.log_level)
    config, device = _runtime(args)
    operating_points: OperatingPoints | None = None
    if args.weights is not None:
        from ichnet_core.models.weights import build_model, load_weights

        weights = load_weights(args.weights, args.weights_sha256)
        model = build_model(weights).to(device)
        grid = model.config.grid
        what = str(args.weights)
        if args.operating_points == "weights":
            operating_points = weights.operating_points
    else:
        checkpoint = _checkpoint_of(config, args.checkpoint)
        model, grid, _ = load_trained_model(checkpoint, device)
        what = str(checkpoint)
    split = Split(args.split)
    if args.cases is not None:
        config = with_synthetic_cases(config, split, args.cases)
    cases = build_split(config, split)
    if len(cases) == 0:
        raise ValueError(f"the {split.value} split of {args.config} holds no cases")
    if args.operating_points == "weights" and args.weights is None:
        raise ValueError("--operating-points weights needs --weights")
    if args.operating_points not in (None, "weights"):
        operating_points = _read_operating_points_file(Path(args.operating_points))
    threshold = args.threshold if args.threshold is not None else config.validation.threshold
    with torch.inference_mode():
        result = evaluate_model(
            model,
            cases,
            grid,
            device,
            threshold=threshold,
            operating_points=operating_points,
            autocast_dtype=autocast_dtype(config.optim.amp, device),
            progress=config.logging.progress_bar,
            bootstrap_replicates=args.bootstrap,
        )
    out = args.out or Path(config.output_dir) / f"eval-{split.value}"
    title = f"{what} on the {split.value} split"
    paths = write_report(result, out, title=title)
    print(format_markdown(result, title))
    print("\n".join(f"{kind}: {path}" for kind, path in paths.items()))
    return EXIT_OK


def _checkpoint_of(config: TrainConfig, checkpoint: Path | None) -> Path:
    """``checkpoint``, else the run's best, else its last checkpoint."""
    if checkpoint is not None:
        return checkpoint
    checkpoints = Path(config.output_dir) / "checkpoints"
    found = next(
        (p for p in (checkpoints / BEST_CHECKPOINT, checkpoints / LAST_CHECKPOINT) if p.is_file()),
        None,
    )
    if found is None:
        raise ValueError(f"no checkpoint in {checkpoints}; pass --checkpoint or --weights")
    return found


def _read_operating_points_file(path: Path) -> OperatingPoints:
    from ichnet_core.operating_points import METADATA_KEY

    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or data.get("format") != OPERATING_POINTS_FORMAT:
        raise ValueError(f"{path} is not an {OPERATING_POINTS_FORMAT!r} file")
    return OperatingPoints.from_metadata({METADATA_KEY: data["operating_points"]})


def eval_main(argv: Sequence[str] | None = None) -> int:
    """``ichnet-eval`` --config C [--checkpoint K | --weights W] [--split test]"""
    return _run(_evaluate, list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":  # torchrun -m training.cli [train] --config ...
    sys.exit(train_main())
