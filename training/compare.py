"""Train and evaluate ICHNet, its ablations and the baselines; write the comparison table.

A compare config names a base training config and the runs (each a model plus optional config
overrides). Every run trains in ``<output_dir>/<run name>`` (resuming when interrupted, skipping
training when already complete), is evaluated on the held-out split, and one Markdown table
(``docs/results.md`` by default) collects the headline numbers, with links to each run's full
Table 2 / Table 3.

Each evaluated run leaves a report with a ``run.json`` record (config hash, split, a fingerprint
of the training and evaluation cases, the ``--max-steps`` cap if any, parameters, training
minutes). A run whose record matches is neither trained nor evaluated again: at diagnostic
resolution the seven runs take hours of this project's CPU, longer than one working session,
and a committed ``reports_dir`` carries the finished ones to the next (or comes back from a
lent GPU, ``bench/gpu_compare.sh``).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import platform
import time
from pathlib import Path
from typing import Any

import torch

from ichnet_core.config_errors import read_yaml
from training.config import (
    CompareConfig,
    CompareRun,
    TrainConfig,
    config_hash,
    parse_compare_config,
    parse_config,
)
from training.data.build import build_split
from training.data.source import CaseSource
from training.data.splits import Split
from training.eval_report import write_report
from training.evaluate import evaluate_model
from training.metrics import format_metric
from training.runlog import read_csv
from training.trainer import Trainer, load_trained_model

logger = logging.getLogger(__name__)


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_compare_config(path: Path) -> tuple[CompareConfig, dict[str, Any]]:
    """The compare config and the raw base training config it points to."""
    config = parse_compare_config(read_yaml(path))
    base_path = (Path(path).parent / config.base).resolve()
    base = read_yaml(base_path) or {}
    parse_config(base)  # report problems of the base config itself first
    return config, base


def run_config(compare: CompareConfig, base: dict[str, Any], run: CompareRun) -> TrainConfig:
    """The training config of one run."""
    data = _merge(_merge(base, compare.overrides), run.overrides)
    data["model"] = run.model.model_dump(mode="json")
    data["output_dir"] = str(compare.output_dir / run.name)
    return parse_config(data)


#: The record beside each run's report that lets a later compare reuse it.
RUN_RECORD = "run.json"
#: Beside a run's checkpoints: the data fingerprint its training started on.
RUN_DATA = "data.sha256"


def report_dir(compare: CompareConfig, run: CompareRun) -> Path:
    """Where the report of ``run`` goes (see ``CompareConfig.reports_dir``)."""
    if compare.reports_dir is not None:
        return compare.reports_dir / run.name
    return compare.output_dir / run.name / f"eval-{compare.split}"


def data_fingerprint(config: TrainConfig, split: str) -> str:
    """sha256 over the content keys of the training and evaluation cases (case ids where a
    source has none): a report is reused only for the very data it was made on, so not after
    a change to the generator, which the config hash does not see."""
    digest = hashlib.sha256()
    for part in (Split.TRAIN, Split(split)):
        cases: CaseSource = build_split(config, part)
        for index, entry in enumerate(cases.entries):
            digest.update(f"{part.value}:{entry.case_id}={cases.fingerprint(index)}\n".encode())
    return digest.hexdigest()


def finished_record(
    out_dir: Path, config: TrainConfig, split: str, max_steps: int | None = None
) -> dict[str, Any] | None:
    """The run's record and metrics when its report in ``out_dir`` was made by this very
    configuration on the same data with the same step cap (a smoke test's ``--max-steps``
    report must never stand in for the full run); ``None`` when the run must be trained and
    evaluated."""
    path = out_dir / RUN_RECORD
    if not path.is_file():
        return None
    record = json.loads(path.read_text(encoding="utf-8"))
    expected = {
        "config_hash": config_hash(config),
        "split": split,
        "data": data_fingerprint(config, split),
        "max_steps": max_steps,
    }
    if any(record.get(key) != value for key, value in expected.items()):
        logger.info("%s: made by another configuration or on other data; running again", path)
        return None
    record["metrics"] = json.loads((out_dir / "metrics.json").read_text(encoding="utf-8"))
    return record


def _row(name: str, record: dict[str, Any]) -> str:
    """One table row from a run record with its ``metrics`` (``EvalResult.to_dict``)."""
    metrics = record["metrics"]
    subject = metrics["table2"]["subject"].get("any") or {}
    slices = metrics["table2"]["slice"].get("any") or {}
    volume = metrics.get("hemorrhage_volume") or {}
    derived = " (max of slices)" if metrics.get("subject_source") == "max_of_slices" else ""
    minutes = record.get("train_minutes")
    return (
        f"| {name} | `{record['model']}` | {record['parameters']:,} | "
        f"{format_metric(subject.get('auc'))}{derived} | {format_metric(subject.get('f1'))} | "
        f"{format_metric(slices.get('auc'))} | {format_metric(slices.get('f1'))} | "
        f"{format_metric(metrics['table3']['hemorrhage']['dice'])} | "
        f"{format_metric(metrics['table3']['mean']['dice'])} | "
        f"{format_metric(volume.get('mean_absolute_error_ml'), 2)} | "
        f"{'n/a' if minutes is None else f'{minutes:.1f}'} |"
    )


def _set_aside_other_data(run_dir: Path, fingerprint: str) -> None:
    """Start ``run_dir`` afresh unless its training began on this very data.

    Why: a compare run resumes its checkpoint, and the config hash does not see the generator.
    After a label change the old, complete run would be resumed as finished, evaluated on the
    new test cases and filed as made on the new data (2026-12-05). A run folder without the
    stamp (older code) or with another fingerprint is renamed aside, never deleted.
    """
    stamp = run_dir / RUN_DATA
    if run_dir.is_dir() and any(run_dir.iterdir()):
        if stamp.is_file() and stamp.read_text(encoding="utf-8").strip() == fingerprint:
            return
        aside = run_dir.with_name(f"{run_dir.name}.other-data-{time.strftime('%Y%m%dT%H%M%S')}")
        logger.warning("%s was trained on other data; moved to %s", run_dir, aside)
        run_dir.rename(aside)
    run_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(fingerprint + "\n", encoding="utf-8")


def _train_and_evaluate(
    compare: CompareConfig, run: CompareRun, config: TrainConfig, max_steps: int | None
) -> dict[str, Any]:
    """Train ``run`` (resuming one begun on the same data), evaluate its best checkpoint, write
    its report and record."""
    data = data_fingerprint(config, compare.split)
    _set_aside_other_data(Path(config.output_dir), data)
    trainer = Trainer(config, resume=True, max_steps=max_steps)
    summary = trainer.fit()
    if trainer.stop_requested:
        # Evaluating a run cut short would file its half-trained figures as the run's report.
        raise RuntimeError(
            f"compare stopped by a signal during run {run.name} (checkpoint saved in "
            f"{config.output_dir}); the same command continues it"
        )
    epoch_times = [
        row["epoch_time_s"]
        for row in read_csv(Path(config.output_dir) / "metrics.csv")
        if row["epoch_time_s"] is not None
    ]
    checkpoint = summary.best_checkpoint or summary.last_checkpoint
    model, grid, _ = load_trained_model(checkpoint, trainer.device)
    result = evaluate_model(
        model,
        build_split(config, Split(compare.split)),
        grid,
        trainer.device,
        threshold=config.validation.threshold,
        autocast_dtype=trainer.eval_dtype,
        progress=config.logging.progress_bar,
        description=f"{run.name} {compare.split}",
    )
    out_dir = report_dir(compare, run)
    write_report(result, out_dir, title=f"{run.name} on the {compare.split} split")
    record: dict[str, Any] = {
        "config_hash": config_hash(config),
        "split": compare.split,
        "data": data,
        "max_steps": max_steps,
        "n_cases": result.n_cases,
        "model": run.model.name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_minutes": sum(epoch_times) / 60.0 if epoch_times else None,
        "checkpoint": checkpoint.name,
        "steps": summary.steps,
    }
    (out_dir / RUN_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record | {"metrics": result.to_dict()}


def run_compare(path: Path, *, max_steps: int | None = None) -> Path:
    """Train + evaluate every run of the compare config at ``path`` that has no matching
    record yet; returns the results file."""
    compare, base = load_compare_config(path)
    rows: list[str] = []
    details: list[str] = []
    n_cases = None
    for run in compare.runs:
        config = run_config(compare, base, run)
        out_dir = report_dir(compare, run)
        record = finished_record(out_dir, config, compare.split, max_steps)
        if record is None:
            record = _train_and_evaluate(compare, run, config, max_steps)
        else:
            logger.info("%s: reusing the report in %s", run.name, out_dir)
        n_cases = record["n_cases"]
        rows.append(_row(run.name, record))
        details.append(
            f"- {run.name}: `{out_dir / 'tables.md'}` (checkpoint `{record['checkpoint']}`, "
            f"step {record['steps']})"
        )
    results_path = Path(compare.results_md)
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text(
        _results_markdown(path, compare, base, rows, details, n_cases), encoding="utf-8"
    )
    logger.info("wrote %s", results_path)
    return results_path


def _results_markdown(
    path: Path,
    compare: CompareConfig,
    base: dict[str, Any],
    rows: list[str],
    details: list[str],
    n_cases: int | None,
) -> str:
    # The data every run shares: the base config under the comparison's own overrides (which
    # may pin another number of training series than the base, as compare_diag.yaml does).
    data = _merge(base, compare.overrides).get("data") or {}
    synthetic = data.get("synthetic") or {}
    device = "CUDA " + torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    lines = [
        "# Results: ICHNet, ablations and baselines",
        "",
        f"Generated by `ichnet-train compare --config {path}` on "
        f"{datetime.date.today().isoformat()} ({device}, {platform.machine()}, torch "
        f"{torch.__version__}).",
        "",
        f"Evaluated on the **{compare.split}** split: {n_cases} cases. Training data: "
        f"{synthetic.get('train_cases', 'no')} synthetic cases (seed block 'train'), "
        f"{len(data.get('datasets') or [])} public dataset(s). Validation and "
        "test cases come from disjoint seed blocks / patients.",
        "",
        "These numbers describe this configuration on this data only. Synthetic data is not "
        "patient data; nothing here says how a model performs on real scans.",
        "",
        "| run | model | parameters | subject AUC (any) | subject F1 (any) | slice AUC (any) | "
        "slice F1 (any) | Dice hemorrhage | Dice mean (3 classes) | volume MAE (mL) | "
        "train time (min) |",
        "|" + "---|" * 11,
        *rows,
        "",
        "n/a: the model has no such output (e.g. ICHNet-cls has no segmentation) or the metric "
        "is undefined on this data. F1 at threshold 0.5. Train time = sum of the logged epoch "
        "times (training + validation) of completed epochs.",
        "",
        "Full tables (all subtypes, accuracy, sensitivity, specificity):",
        "",
        *details,
        "",
    ]
    return "\n".join(lines)
