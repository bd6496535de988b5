"""The node's result files for the real study, pinned: a refactor must not change one byte.

The real 28-slice GE head CT goes through ``analyse_series`` with fixed weights (the tiny
compartment weights of ``test_workflow_results``: seed 3, hand-made operating points) on
the float32 reference torch engine. The SEG, the SR and result.json are compared as digests with
what main produced before the issue-9 refactors (main at 293d0c5). Only what differs between
two runs of the same code is left out: DA/TM/DT values (creation times), highdicom's random
Dimension Organization UID and result.json's ``timings_s``.

A deliberate change of the results (a new result.json key, new UIDs, another segment layout)
changes the digests: recompute them on the new code with :func:`result_digests` and say why in
the commit.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

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
    # result.json gained "result_version": 1 (issue 10) and "comparison": null (issue 11, no
    # prior), both DESIGN.md keys. Without either the digest is main's 2544419cdc4d...; with
    # only comparison f1cbd87de65b..., with only result_version e2ea6548e43a...
    "result.json": "fff84186328a89490a4f6aa7720807a79623f95cec0d8d477b4d7935913b6cca",
}
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
    """sha256 of the SEG, the SR (as Part 10 files) and result.json, volatile parts blanked."""
    result = {key: value for key, value in analysis.result.items() if key != "timings_s"}
    return {
        "seg": _dicom_digest(analysis.seg),
        "sr": _dicom_digest(analysis.sr),
        "result.json": hashlib.sha256(json.dumps(result, sort_keys=True).encode()).hexdigest(),
    }


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
