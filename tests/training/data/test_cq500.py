"""CQ500 loader on a tiny fixture in the distributed layout (subject folders + reads.csv)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ichnet_core.labels import CLASS_NAMES
from training.data.cq500 import CQ500_FINDINGS, READERS, Cq500Source, read_reads
from training.data.csv_utils import LabelFileError

from .fixtures import BASE_HU, STEP_HU, write_series

OTHER_FINDINGS = (
    "BleedLocation-Left",
    "BleedLocation-Right",
    "ChronicBleed",
    "Fracture",
    "CalvarialFracture",
    "OtherFracture",
    "MassEffect",
    "MidlineShift",
)
FINDING_ORDER = ("ICH", "IPH", "IVH", "SDH", "EDH", "SAH", *OTHER_FINDINGS)


def _reads(path: Path, rows: dict[str, dict[str, tuple[int, int, int]]]) -> None:
    """reads.csv with the published header; unspecified findings are 0 for every reader."""
    header = ["name", "Category"] + [f"{r}:{f}" for r in READERS for f in FINDING_ORDER]
    lines = [",".join(header)]
    for name, votes in rows.items():
        cells = [name, "B1"]
        for reader in range(len(READERS)):
            cells += [str(votes.get(f, (0, 0, 0))[reader]) for f in FINDING_ORDER]
        lines.append(",".join(cells))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _subject(root: Path, number: int, series: dict[str, tuple[float, int]]) -> None:
    """Series folders ``CT <name>`` with (thickness, slice count); heights shuffled."""
    subject = root / f"CQ500CT{number} CQ500CT{number}" / "Unknown Study"
    for index, (name, (thickness, count)) in enumerate(series.items()):
        heights = [float(thickness * k) for k in np.random.default_rng(index).permutation(count)]
        write_series(
            subject / f"CT {name}",
            heights,
            study_uid=f"1.2.826.0.1.{number}",
            series_uid=f"1.2.826.0.1.{number}.{index + 1}",
            patient_id=f"CQ500-CT-{number}",
            description=name,
            thickness=thickness,
        )


@pytest.fixture
def cq500_root(tmp_path: Path) -> Path:
    batch = tmp_path / "qct01"  # subjects one level down, as in the zip files
    _subject(batch, 7, {"BONE 5mm": (5.0, 4), "PLAIN THIN": (0.625, 6), "5mm": (5.0, 4)})
    _subject(batch, 12, {"PLAIN THIN": (0.625, 5), "POST CONTRAST": (5.0, 4)})
    _subject(batch, 30, {"5mm": (5.0, 4)})  # no reads row: skipped
    _reads(
        tmp_path / "reads.csv",
        {
            # Majority 2 of 3: ICH and SDH yes; EDH only one reader: no.
            "CQ500-CT-7": {"ICH": (1, 1, 0), "SDH": (0, 1, 1), "EDH": (1, 0, 0)},
            "CQ500-CT-12": {"ICH": (0, 0, 1)},
        },
    )
    return tmp_path


def test_majority_labels_and_series_choice(cq500_root: Path) -> None:
    source = Cq500Source(cq500_root, min_slices=3)
    assert [e.case_id for e in source.entries] == ["cq500/CQ500-CT-7", "cq500/CQ500-CT-12"]

    case = source[0]
    # 5 mm plain series chosen (bone kernel excluded, thin series further from 5 mm).
    assert case.hu.shape == (4, 8, 8)
    np.testing.assert_allclose(case.slice_extent_mm, 5.0)
    np.testing.assert_allclose(case.hu[:, 0, 0], BASE_HU + STEP_HU * np.arange(4))
    expected = np.zeros(6)
    expected[CLASS_NAMES.index("any")] = 1
    expected[CLASS_NAMES.index("SDH")] = 1
    np.testing.assert_array_equal(case.subject_labels, expected)
    assert case.slice_labels is None and case.seg is None  # subject-level only

    # Subject 12: post-contrast excluded, so the thin plain series it is.
    thin = source[1]
    assert thin.hu.shape[0] == 5
    np.testing.assert_allclose(thin.slice_extent_mm, 0.625)
    np.testing.assert_array_equal(thin.subject_labels, np.zeros(6))


def test_reads_errors_name_the_cell(tmp_path: Path) -> None:
    path = tmp_path / "reads.csv"
    _reads(path, {"CQ500-CT-1": {}})
    text = path.read_text().replace("CQ500-CT-1,B1,0", "CQ500-CT-1,B1,2", 1)
    path.write_text(text)
    with pytest.raises(LabelFileError, match=r"R1:ICH must be 0 or 1, found '2'"):
        read_reads(path)
    path.write_text("name,Category\nCQ500-CT-1,B1\n")
    with pytest.raises(LabelFileError, match="R1:ICH"):
        read_reads(path)


def test_every_finding_maps_to_a_class() -> None:
    assert sorted(CQ500_FINDINGS.values()) == sorted(CLASS_NAMES)
