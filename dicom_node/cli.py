"""``ichnet-node``: serve | infer | export | triton-repo | demo | check-config | jobs (DESIGN.md).

Thin wrappers: each sub-command parses arguments, sets up logging and calls the API that does the
work, so tests can call the same functions without a subprocess.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from pydicom import Dataset, dcmwrite

from dicom_node.config import ConfigError, NodeConfig, engine_cache_dir, load_config
from dicom_node.job_control import (
    JobControlError,
    NodeStorage,
    list_lines,
    resend,
    retry,
    show_lines,
)
from dicom_node.jobs import JobStoreError
from dicom_node.log_format import JsonFormatter
from dicom_node.results import RESULT_JSON_NAME, write_result
from dicom_node.selection import select_series
from dicom_node.triton_engine import node_engine
from dicom_node.workflow import (
    SeriesSkipped,
    analyse_series,
    read_datasets,
    series_size_problem,
)
from ichnet_core.durable import write_atomic
from ichnet_core.inference.base import EngineName, EngineTransientError, EngineUnavailableError
from ichnet_core.models.weights import WeightsError, load_weights

logger = logging.getLogger(__name__)

#: Exit codes: 0 success, 1 unusable input or configuration, 2 usage (argparse).
EXIT_OK = 0
EXIT_UNUSABLE = 1

#: ``--engine`` takes the names the config's ``engine:`` takes.
ENGINE_CHOICES = tuple(name.value for name in EngineName)


#: Libraries that log every association, C-STORE or copied module at INFO: too much for a node.
_CHATTY_LOGGERS = ("pynetdicom", "highdicom")


#: The text format of log lines; ``logging.format: json`` writes JSON objects instead.
TEXT_LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_LOG_HANDLER_NAME = "ichnet-node"


def setup_logging(level: str = "INFO", log_format: str = "text") -> None:
    """Log lines with time, level and module, or JSON objects (``logging.format: json``,
    :class:`~dicom_node.log_format.JsonFormatter`); only the CLI configures logging.

    Library warnings (e.g. highdicom's remarks on a source's PatientName) go to the log too, and
    chatty libraries are held at WARNING unless DEBUG was asked for. A second call (``serve``
    once its config is read) changes the format of the handler the first one installed.
    """
    numeric = getattr(logging, level.upper(), logging.INFO)
    formatter = JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_LOG_FORMAT)
    ours = [h for h in logging.getLogger().handlers if h.get_name() == _LOG_HANDLER_NAME]
    for handler in ours:
        handler.setFormatter(formatter)
    if not ours:
        handler = logging.StreamHandler(sys.stderr)
        handler.set_name(_LOG_HANDLER_NAME)
        handler.setFormatter(formatter)
        logging.basicConfig(level=numeric, handlers=[handler])  # no-op where a host set up logging
    logging.getLogger().setLevel(numeric)
    logging.captureWarnings(True)
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(
            logging.DEBUG if numeric <= logging.DEBUG else logging.WARNING
        )


def _fail(message: str) -> int:
    print(f"ichnet-node: error: {message}", file=sys.stderr)
    return EXIT_UNUSABLE


def _config_or_default(path: str | None) -> NodeConfig:
    return load_config(path) if path else NodeConfig()


def _group_by_series(datasets: Sequence[Dataset]) -> dict[str, list[Dataset]]:
    groups: dict[str, list[Dataset]] = defaultdict(list)
    for ds in datasets:
        groups[str(ds.get("SeriesInstanceUID", "<no SeriesInstanceUID>"))].append(ds)
    return dict(groups)


def _write_dataset(dataset: Dataset, path: Path) -> None:
    write_atomic(path, lambda handle: dcmwrite(handle, dataset, enforce_file_format=True))


def cmd_export(args: argparse.Namespace) -> int:
    """Write the staged ONNX graphs (encoder, recurrence, decoder) of the configured weights."""
    from ichnet_core.export import ExportError, export_staged

    try:
        config = _config_or_default(args.config)
        weights = load_weights(config.model.weights, config.model.weights_sha256)
        exported = export_staged(weights, Path(args.out), opset=args.opset)
    except ConfigError as exc:
        return _fail("; ".join(exc.problems))
    except (WeightsError, ExportError, ValueError) as exc:
        return _fail(str(exc))
    print(f"exported {weights.model_name} (sha256 {weights.sha256[:12]}) to {exported.directory}")
    return EXIT_OK


def cmd_triton_repo(args: argparse.Namespace) -> int:
    """Write a Triton model repository for the configured weights (README "Scaling out")."""
    from ichnet_core.export import ExportError, cached_export
    from ichnet_core.serving.triton_repo import TritonRepoError, write_repository

    try:
        config = _config_or_default(args.config)
        weights = load_weights(config.model.weights, config.model.weights_sha256)
        exported = cached_export(weights, engine_cache_dir(config))
        folders = write_repository(
            weights,
            exported,
            Path(args.out),
            name=args.model or config.triton.model,
            kind=args.kind,
            chunk_slices=config.model.chunk_slices,
        )
    except ConfigError as exc:
        return _fail("; ".join(exc.problems))
    except (WeightsError, ExportError, TritonRepoError, OSError) as exc:
        return _fail(str(exc))
    names = ", ".join(folder.name for folder in folders)
    print(f"wrote Triton models {names} (weights sha256 {weights.sha256[:12]}) to {args.out}")
    return EXIT_OK


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{args.file}: {problem}", file=sys.stderr)
        return EXIT_UNUSABLE
    peers = ", ".join(f"{p.ae_title}@{p.host}:{p.port}" for p in config.peers) or "none"
    print(
        f"{args.file}: OK (AE {config.node.ae_title} on {config.node.bind}:{config.node.port}, "
        f"peers: {peers}, engine: {config.engine})"
    )
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the node until SIGTERM/SIGINT; then stop gracefully (work in flight is persisted)."""
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{args.config}: {problem}", file=sys.stderr)
        return EXIT_UNUSABLE
    setup_logging(args.log_level or config.logging.level, config.logging.format)
    # Everything the node writes is patient data or about it (DESIGN.md: files 0600,
    # directories 0700); the modules set those modes, and the umask covers what a library
    # writes on its own (engine caches, SQLite's side files).
    os.umask(0o077)
    # The DICOM server's modules (pynetdicom, metrics, notifications) are imported here, not at
    # the top: `infer` and the job commands do not need them, and they cost ~0.3 s of start-up.
    from dicom_node.app import NoPeersConfiguredError
    from dicom_node.service import NodeService

    try:
        service = NodeService(config)
        service.start()
    except (WeightsError, EngineUnavailableError, NoPeersConfiguredError, OSError) as exc:
        return _fail(str(exc))
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        logger.info("received %s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    stop.wait()
    service.stop()
    return EXIT_OK


def cmd_infer(args: argparse.Namespace) -> int:
    """Offline analysis of one series in a folder; writes seg.dcm, sr.dcm and result.json."""
    try:
        config = _config_or_default(args.config)
    except ConfigError as exc:
        return _fail("; ".join(exc.problems))
    input_dir = Path(args.input_dir)
    if not input_dir.is_dir():
        return _fail(f"input folder {input_dir} does not exist")
    files = [p for p in input_dir.rglob("*") if p.is_file()]
    # Headers first: the series is chosen, checked and sized before any pixel data is read.
    datasets, unreadable = read_datasets(files, headers_only=True)
    for line in unreadable:
        logger.info("ignoring %s", line)
    if not datasets:
        return _fail(f"no DICOM files in {input_dir}")
    groups = _group_by_series(datasets)
    if args.series:
        if args.series not in groups:
            return _fail(f"series {args.series} is not in {input_dir}")
        datasets = groups[args.series]
    elif len(groups) > 1:
        listing = ", ".join(f"{uid} ({len(ds)} files)" for uid, ds in groups.items())
        return _fail(f"{input_dir} holds {len(groups)} series; choose one with --series: {listing}")

    # Refuse an unsuitable series before the model is loaded and an engine prepared (an ONNX
    # export or TensorRT build takes far longer than reading the headers).
    selection = select_series(datasets, config.selection)
    if not selection.accepted:
        return _fail(f"series not analysed: {selection.reason}")
    too_large = series_size_problem(datasets, config.limits.max_series_voxels)
    if too_large is not None:
        return _fail(f"series not analysed: {too_large}")
    datasets, unreadable = read_datasets(Path(ds.filename) for ds in datasets)
    if unreadable:
        return _fail(f"series not analysed: {'; '.join(unreadable)}")
    try:
        weights = load_weights(config.model.weights, config.model.weights_sha256)
        engine = node_engine(config, weights, args.engine, warm=False)  # one series only
    except (WeightsError, EngineUnavailableError) as exc:
        return _fail(str(exc))
    try:
        analysis = analyse_series(
            datasets, engine=engine, weights=weights, rules=config.selection, selection=selection
        )
    except SeriesSkipped as exc:
        return _fail(f"series not analysed: {exc.reason}")
    except EngineTransientError as exc:
        return _fail(f"series not analysed now, try again: {exc}")

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_dataset(analysis.seg, out_dir / "seg.dcm")
    _write_dataset(analysis.sr, out_dir / "sr.dcm")
    write_result(out_dir / RESULT_JSON_NAME, analysis.result)
    result = analysis.result
    verdict = "present" if result["present"]["any"] else "absent"
    print(
        f"ICH probability {result['subject']['any']:.3f} ({verdict} at operating point "
        f"{result['operating_points']['any']:.3g}); hemorrhage "
        f"{analysis.hemorrhage_volume_ml:.2f} mL; "
        f"wrote {out_dir / 'seg.dcm'}, {out_dir / 'sr.dcm'}, {out_dir / 'result.json'}"
    )
    return EXIT_OK


def cmd_jobs(args: argparse.Namespace) -> int:
    """``jobs list|show|retry|resend``: see and steer the node's jobs (works beside a running
    node; see :mod:`dicom_node.job_control`)."""
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{args.config}: {problem}", file=sys.stderr)
        return EXIT_UNUSABLE
    os.umask(0o077)
    try:
        storage = NodeStorage.open(Path(config.node.storage_dir), config.logging.audit_syslog)
    except (JobControlError, JobStoreError, OSError) as exc:
        return _fail(str(exc))
    try:
        if args.action == "list":
            for line in list_lines(storage.jobs):
                print(line)
        elif args.action == "show":
            for line in show_lines(storage, args.job):
                print(line)
        elif args.action == "retry":
            new = retry(storage, args.job)
            print(
                f"job {new.id} QUEUED: analyses series {new.series_instance_uid} again "
                f"(re-run of job {args.job})"
            )
        else:
            job = resend(storage, args.job)
            print(
                f"job {job.id} SENDING: result version {job.result_version} goes to "
                f"{job.calling_ae} again"
            )
    except (JobControlError, JobStoreError, ValueError) as exc:
        return _fail(str(exc))
    finally:
        storage.close()
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    """Synthetic head CT through a node on loopback; prints findings, writes an overlay PNG."""
    from dicom_node.demo import run_demo

    try:
        run_demo(Path(args.workdir))
    except (RuntimeError, WeightsError, EngineUnavailableError, OSError) as exc:
        return _fail(f"demo failed: {exc}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ichnet-node",
        description="ICHNet DICOM node (research software, not a medical device).",
    )
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING or ERROR")
    sub = parser.add_subparsers(dest="command", required=True)

    check = sub.add_parser("check-config", help="validate a node configuration file")
    check.add_argument("file")
    check.set_defaults(func=cmd_check_config)

    serve = sub.add_parser("serve", help="run the DICOM node until SIGTERM/SIGINT")
    serve.add_argument("--config", required=True, help="node configuration (YAML)")
    serve.set_defaults(func=cmd_serve)

    export = sub.add_parser("export", help="export the model as staged ONNX graphs")
    export.add_argument("--out", required=True, help="output folder for the ONNX graphs")
    export.add_argument("--config", default=None, help="node config naming the weights")
    export.add_argument(
        "--opset", type=int, default=None, help="ONNX opset (default: the exporter's)"
    )
    export.set_defaults(func=cmd_export)

    repo = sub.add_parser("triton-repo", help="write a Triton Inference Server model repository")
    repo.add_argument("--out", required=True, help="new (or empty) repository folder")
    repo.add_argument("--config", default=None, help="node config naming the weights")
    repo.add_argument("--model", default=None, help="model name (default: triton.model)")
    repo.add_argument(
        "--kind", choices=["cpu", "gpu"], default="cpu", help="instance_group kind of the models"
    )
    repo.set_defaults(func=cmd_triton_repo)
    jobs = sub.add_parser(
        "jobs",
        help="list, show, retry or resend the node's jobs",
        description="list: one line per job (id, state, series UID, calling AE, result "
        "version, reason); show JOB: everything about one job; retry JOB: analyse a FAILED "
        "or SKIPPED job's series again (a new job); resend JOB: send a DONE or FAILED job's "
        "results again.",
    )
    jobs.add_argument("action", choices=("list", "show", "retry", "resend"))
    jobs.add_argument("job", nargs="?", type=int, help="job id (show, retry, resend)")
    jobs.add_argument("--config", required=True, help="the node's configuration (YAML)")
    jobs.set_defaults(func=cmd_jobs)

    demo = sub.add_parser("demo", help="run a synthetic head CT through the node on loopback")
    demo.add_argument(
        "--workdir", default="var/demo", help="where to keep the demo's files (default: var/demo)"
    )
    demo.set_defaults(func=cmd_demo)

    infer = sub.add_parser("infer", help="analyse one series in a folder of DICOM files")
    infer.add_argument("input_dir")
    infer.add_argument(
        "--out", required=True, help="output folder for seg.dcm, sr.dcm, result.json"
    )
    infer.add_argument("--engine", choices=ENGINE_CHOICES, default=None)
    infer.add_argument("--config", default=None, help="node config for selection rules and weights")
    infer.add_argument(
        "--series", default=None, help="SeriesInstanceUID when the folder holds several"
    )
    infer.set_defaults(func=cmd_infer)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "jobs" and (args.action == "list") != (args.job is None):
        parser.error(
            "jobs list takes no job id" if args.job is not None else f"jobs {args.action} needs JOB"
        )
    setup_logging(args.log_level or "INFO")
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
