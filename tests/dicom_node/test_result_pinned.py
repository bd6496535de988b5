"""The node's result files for the real study, pinned: a refactor must not change one byte.

The real 28-slice GE head CT goes through ``analyse_series`` with fixed weights (the tiny
compartment weights of ``test_workflow_results``: seed 3, hand-made operating points) on
the float32 reference torch engine. The SEG and the SR are compared as digests with what main
produced before the issue-9 refactors (main at 293d0c5). Only what differs between two runs of
the same code is left out: DA/TM/DT values (creation times), highdicom's random Dimension
Organization UID and result.json's ``timings_s``.

result.json is compared with ``RESULT_FILE`` key by key: every string, flag and count exactly,
every number to within ``FLOAT_TOLERANCE``. Its probabilities keep all the digits of float32,
whose last ones depend on the CPU's convolution kernels (oneDNN picks them per instruction set:
a machine with other AVX-512 extensions gave another digest of the same code, 2026-12-06); the SR
keeps 3 decimals, so its digest holds across machines. ``RESULT_FILE`` was written on
2026-12-06 by the node code of 322cc6b (unchanged since), whose SEG and SR digests are main's.

A deliberate change of the results (a new result.json key, new UIDs, another segment layout)
changes the digests: recompute them on the new code with :func:`result_digests` and say why in
the commit.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom import Dataset, dcmwrite

from dicom_node.config import SelectionSection
from dicom_node.results import ResultUids
from dicom_node.workflow import SeriesAnalysis, analyse_series, model_identity, read_datasets
from ichnet_core.inference.torch_engine import TorchEngine
from tests.dicom_node.test_workflow_results import make_compartment_weights

pytestmark = pytest.mark.shared_data

WEIGHTS_SHA256 = "f4a2cf39f9f04a7a37090f935283497804b1f1d2d35cc2503b2464743a84a121"
EXPECTED = {
    "seg": "5f669fc8dab28ffe8a6d4da2546a7a630321b8ce5d275e872294ca77731c3a52",
    "sr": "546573d908c12cfc2efc7a57ef2bb836ae485fbce7736aedc5bf31b5ac79f860",
}
#: result.json of the pinned run (without ``timings_s``). It has "result_version": 1 (issue 10)
#: and "comparison": null (issue 11, no prior), both DESIGN.md keys, beside main's.
RESULT_FILE = Path(__file__).with_name("pinned_result_real_study.json")
#: Allowed difference of a number in result.json: far above float32 rounding (about 1e-7
#: relative), far below what any change of the method moves.
FLOAT_TOLERANCE = 1e-4
_VOLATILE_VRS = frozenset({"DA", "TM", "DT"})


def _encoded(dataset: Dataset) -> bytes:
    buffer = io.BytesIO()
    dcmwrite(buffer, dataset, enforce_file_format=True)
    return buffer.getvalue()


def _blank_volatile(dataset: Dataset) -> None:
    for element in dataset:
        if element.VR in _VOLATILE_VRS or element.keyword == "DimensionOrganizationUID":
            element.value = ""
        elif element.VR == "SQ":
            for item in element.value:
                _blank_volatile(item)


def _dicom_digest(dataset: Dataset) -> str:
    copy = pydicom.dcmread(io.BytesIO(_encoded(dataset)))
    _blank_volatile(copy)
    return hashlib.sha256(_encoded(copy)).hexdigest()


def result_digests(analysis: SeriesAnalysis) -> dict[str, str]:
    """sha256 of the SEG and the SR (as Part 10 files), volatile parts blanked."""
    return {"seg": _dicom_digest(analysis.seg), "sr": _dicom_digest(analysis.sr)}


def stable_result(analysis: SeriesAnalysis) -> dict[str, Any]:
    """result.json as written (through JSON), without ``timings_s``."""
    result = {key: value for key, value in analysis.result.items() if key != "timings_s"}
    loaded: dict[str, Any] = json.loads(json.dumps(result))
    return loaded


def assert_same_result(found: Any, expected: Any, where: str = "result.json") -> None:
    """``found`` equals ``expected``: structure, strings, flags and counts exactly, floats to
    within :data:`FLOAT_TOLERANCE`."""
    if isinstance(expected, dict):
        assert isinstance(found, dict) and sorted(found) == sorted(expected), where
        for key, value in expected.items():
            assert_same_result(found[key], value, f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(found, list) and len(found) == len(expected), where
        for index, (a, b) in enumerate(zip(found, expected, strict=True)):
            assert_same_result(a, b, f"{where}[{index}]")
    elif isinstance(expected, float) and not isinstance(found, bool):
        assert isinstance(found, int | float), where
        assert found == pytest.approx(expected, abs=FLOAT_TOLERANCE), where
    else:
        assert type(found) is type(expected) and found == expected, where


def test_result_files_of_the_real_study_are_unchanged(head_ct_dir: Path, tmp_path: Path) -> None:
    weights = make_compartment_weights(tmp_path)
    assert weights.sha256 == WEIGHTS_SHA256  # same weights, or the comparison means nothing
    datasets, problems = read_datasets(sorted(head_ct_dir.glob("*.dcm")))
    assert problems == []
    # The node gives every analysis new UIDs (issue 10); the pin uses the UIDs main derived
    # from the series and the weights alone, so the SEG and SR bytes compare with main's.
    uids = ResultUids.derive(datasets[0].SeriesInstanceUID, model_identity(weights))
    analysis = analyse_series(
        datasets,
        engine=TorchEngine(weights),
        weights=weights,
        rules=SelectionSection(),
        uids=uids,
    )
    assert result_digests(analysis) == EXPECTED
    assert_same_result(stable_result(analysis), json.loads(RESULT_FILE.read_text(encoding="utf-8")))
