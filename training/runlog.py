"""Run logs: ``steps.csv`` (every few optimiser steps), ``metrics.csv`` (every epoch), TensorBoard.

CSV files have fixed columns (every loss term, weight and validation metric), so runs can be
compared and plotted without parsing; a value that does not exist for a row is left empty. A
resumed run appends to the same files. TensorBoard event files are written only when the
``tensorboard`` package is installed (it is not a dependency).
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from ichnet_core.durable import write_atomic
from training.losses import Term

logger = logging.getLogger(__name__)

STEP_COLUMNS: Final[tuple[str, ...]] = (
    "step",
    "epoch",
    "loss",
    *(f"loss_{term.value}" for term in Term),
    "lr",
    "step_time_s",
    "data_time_s",
)
VALIDATION_METRICS: Final[tuple[str, ...]] = (
    "val_loss",
    *(f"val_loss_{term.value}" for term in Term),
    "val_subject_auc_any",
    "val_slice_auc_any",
    "val_subject_f1_any",
    "val_dice_hemorrhage",
    "val_dice_mean",
)
EPOCH_COLUMNS: Final[tuple[str, ...]] = (
    "epoch",
    "step",
    "train_loss",
    *(f"train_loss_{term.value}" for term in Term),
    *VALIDATION_METRICS,
    *(f"weight_{term.value}" for term in Term),
    "lr",
    "epoch_time_s",
    "mean_step_time_s",
    # Added later: appended, so the metrics.csv of a run started before them is extended.
    "val_real_normal_any",
    "val_real_normal_false_ml",
)


class CsvLog:
    """Append rows with fixed columns to a CSV file (header written once)."""

    def __init__(self, path: Path, columns: tuple[str, ...]) -> None:
        self.path = Path(path)
        self.columns = columns
        if self.path.exists():
            with self.path.open(newline="", encoding="utf-8") as handle:
                header = next(csv.reader(handle), None)
            if header is not None and _extends(header, columns):
                self._add_columns(len(header))
            elif header is not None and tuple(header) != columns:
                raise ValueError(
                    f"{self.path} has columns {header}, this version writes {list(columns)}; "
                    "use a new output_dir"
                )
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("w", newline="", encoding="utf-8") as handle:
                csv.writer(handle).writerow(columns)

    def _add_columns(self, old_width: int) -> None:
        """Rewrite the file with this version's header, old rows padded with empty cells.

        A run continued over many sessions outlives versions of this file; columns are only
        ever appended, so the run keeps one CSV instead of being forced into a new folder.
        """
        with self.path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))[1:]
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(self.columns)
        padding = [""] * (len(self.columns) - old_width)
        writer.writerows(row + padding for row in rows)
        write_atomic(self.path, buffer.getvalue().encode("utf-8"))
        logger.info("%s: added columns %s", self.path, list(self.columns[old_width:]))

    def write(self, row: Mapping[str, Any]) -> None:
        unknown = sorted(set(row) - set(self.columns))
        if unknown:
            raise ValueError(f"{self.path}: no columns {unknown}")
        with self.path.open("a", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerow([_cell(row.get(column)) for column in self.columns])


def _extends(header: list[str], columns: tuple[str, ...]) -> bool:
    """Whether ``columns`` is ``header`` with more columns appended."""
    return len(header) < len(columns) and tuple(header) == columns[: len(header)]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def read_csv(path: Path) -> list[dict[str, float | None]]:
    """Rows of a log CSV as floats (empty cells -> None)."""
    if not Path(path).exists():
        return []
    with Path(path).open(newline="", encoding="utf-8") as handle:
        return [
            {key: float(value) if value != "" else None for key, value in row.items()}
            for row in csv.DictReader(handle)
        ]


class RunLog:
    """The logs of one run directory."""

    def __init__(self, run_dir: Path, tensorboard: bool) -> None:
        self.steps = CsvLog(run_dir / "steps.csv", STEP_COLUMNS)
        self.epochs = CsvLog(run_dir / "metrics.csv", EPOCH_COLUMNS)
        self.writer: Any = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                logger.info("tensorboard is not installed; logging to CSV only")
            else:
                self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def step(self, row: Mapping[str, Any]) -> None:
        self.steps.write(row)
        self._scalars(row, "step", int(row["step"]), "train/")

    def epoch(self, row: Mapping[str, Any]) -> None:
        self.epochs.write(row)
        self._scalars(row, "epoch", int(row["epoch"]), "epoch/")

    def _scalars(self, row: Mapping[str, Any], axis: str, index: int, prefix: str) -> None:
        if self.writer is None:
            return
        for key, value in row.items():
            if key != axis and isinstance(value, int | float) and value is not None:
                self.writer.add_scalar(prefix + key, value, index)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
