"""Train and evaluate ICHNet, its ablations and the baselines; write the comparison table.

A compare config names a base training config and the runs (each a model plus optional config
overrides). Every run trains in ``<output_dir>/<run name>`` (resuming when interrupted, skipping
training when already complete), is evaluated on the held-out split, and one Markdown table
(``docs/results.md`` by default) collects the headline numbers, with links to each run's full
Table 2 / Table 3.
"""

from __future__ import annotations

import datetime
import logging
import platform
from pathlib import Path
from typing import Any

import torch

from ichnet_core.config_errors import read_yaml
from training.config import (
    CompareConfig,
    CompareRun,
    TrainConfig,
    parse_compare_config,
    parse_config,
)
from training.data.build import build_split
from training.data.splits import Split
from training.evaluate import EvalResult, evaluate_model, write_report
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


def _row(name: str, model_name: str, params: int, result: EvalResult, minutes: float | None) -> str:
    subject, slices = result.table2["subject"]["any"], result.table2["slice"]["any"]
    volume = result.volume or {}
    derived = " (max of slices)" if result.subject_source == "max_of_slices" else ""
    return (
        f"| {name} | `{model_name}` | {params:,} | "
        f"{format_metric(subject.auc if subject else None)}{derived} | {format_metric(subject.f1 if subject else None)} | "
        f"{format_metric(slices.auc if slices else None)} | {format_metric(slices.f1 if slices else None)} | "
        f"{format_metric(result.table3['hemorrhage']['dice'])} | {format_metric(result.table3['mean']['dice'])} | "
        f"{format_metric(volume.get('mean_absolute_error_ml'), 2)} | "
        f"{'n/a' if minutes is None else f'{minutes:.1f}'} |"
    )


def run_compare(path: Path, *, max_steps: int | None = None) -> Path:
    """Train + evaluate every run of the compare config at ``path``; returns the results file."""
    compare, base = load_compare_config(path)
    rows: list[str] = []
    details: list[str] = []
    n_cases = None
    for run in compare.runs:
        config = run_config(compare, base, run)
        trainer = Trainer(config, resume=True, max_steps=max_steps)
        summary = trainer.fit()
        epoch_times = [
            row["epoch_time_s"]
            for row in read_csv(Path(config.output_dir) / "metrics.csv")
            if row["epoch_time_s"] is not None
        ]
        minutes = sum(epoch_times) / 60.0 if epoch_times else None
        checkpoint = summary.best_checkpoint or summary.last_checkpoint
        device = trainer.device
        model, grid, _ = load_trained_model(checkpoint, device)
        cases = build_split(config, Split(compare.split))
        result = evaluate_model(
            model,
            cases,
            grid,
            device,
            threshold=config.validation.threshold,
            autocast_dtype=trainer.eval_dtype,
            progress=config.logging.progress_bar,
            description=f"{run.name} {compare.split}",
        )
        n_cases = result.n_cases
        out_dir = Path(config.output_dir) / f"eval-{compare.split}"
        write_report(result, out_dir, title=f"{run.name} on the {compare.split} split")
        params = sum(p.numel() for p in model.parameters())
        rows.append(_row(run.name, run.model.name, params, result, minutes))
        details.append(f"- {run.name}: `{out_dir / 'tables.md'}` (checkpoint `{checkpoint.name}`)")
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
    synthetic = (base.get("data") or {}).get("synthetic") or {}
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
        f"{len((base.get('data') or {}).get('datasets') or [])} public dataset(s). Validation and "
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
