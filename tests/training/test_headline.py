"""training.headline: the shipping rule (no headline figure worse) applied to report files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from training.headline import EXIT_MAY_SHIP, EXIT_WORSE, FIGURES, compare, main


def _reports(
    auc: float = 0.98, volume_error: float = 1.0, called: bool = False, real_any: float = 0.05
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A test metrics.json and a real_ct report.json with the fields the figures read."""
    entry = {"auc": auc, "sensitivity": 1.0, "specificity": 0.7}
    subject = {name: dict(entry) for name in ("any", "CPH", "IVH", "EDH", "SDH", "SAH")}
    metrics = {
        "table2": {"subject": subject, "slice": {"any": dict(entry)}},
        "table3": {"hemorrhage": {"dice": 0.66}},
        "hemorrhage_volume": {
            "median_absolute_error_ml_positive": volume_error,
            "false_positive_ml_in_negative_cases": 0.01,
        },
    }
    real = {
        "present": {"any": called},
        "hemorrhage_volume_ml": 0.0,
        "subject": {"any": real_any},
        "brain_volume_ml": 1690.0,
    }
    return metrics, real


def _worse(candidate: Any, shipped: Any) -> list[str]:
    return [row.figure.name for row in compare(candidate, shipped) if row.worse]


def test_each_direction_and_the_reported_precision_decide() -> None:
    shipped = _reports()
    assert _worse(_reports(auc=0.99, volume_error=0.9), shipped) == []
    assert _worse(_reports(auc=0.97), shipped) == [
        "subject AUC any",
        "slice AUC any",
        "subject subtype macro AUC",
    ]
    assert _worse(_reports(volume_error=1.2), shipped) == [
        "median abs. volume error, bleeding (mL)"
    ]
    # a difference the tables do not show (0.98 vs 0.9804; 1.00 vs 1.004 mL) is not worse
    assert _worse(_reports(auc=0.9796, volume_error=1.004), shipped) == []
    assert _worse(_reports(called=True), shipped) == ["real normal CT: ICH called (1 = yes)"]
    # the real study's probability is shown, not judged
    assert _worse(_reports(real_any=0.3), shipped) == []
    assert len({figure.name for figure in FIGURES}) == len(FIGURES)


def _write(folder: Path, reports: tuple[dict[str, Any], dict[str, Any]]) -> None:
    (folder / "test").mkdir(parents=True)
    (folder / "real_ct").mkdir()
    (folder / "test" / "metrics.json").write_text(json.dumps(reports[0]))
    (folder / "real_ct" / "report.json").write_text(json.dumps(reports[1]))


@pytest.mark.parametrize(
    ("candidate", "status", "verdict"),
    [
        (_reports(auc=0.99), EXIT_MAY_SHIP, "may replace"),
        (_reports(volume_error=1.5), EXIT_WORSE, "worse on median abs. volume error"),
    ],
)
def test_cli_prints_the_table_and_exits_with_the_verdict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], candidate: Any, status: int, verdict: str
) -> None:
    _write(tmp_path / "candidate", candidate)
    _write(tmp_path / "shipped", _reports())
    shipped = ["--shipped-metrics", str(tmp_path / "shipped" / "test" / "metrics.json")]
    shipped += ["--shipped-real-ct", str(tmp_path / "shipped" / "real_ct" / "report.json")]
    assert main([str(tmp_path / "candidate"), *shipped]) == status
    out = capsys.readouterr().out
    assert "| subject AUC any |" in out and verdict in out
    assert main([str(tmp_path / "missing"), *shipped]) == 1
    assert "cannot read" in capsys.readouterr().err
