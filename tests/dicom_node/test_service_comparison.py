"""Follow-up comparison through the running node: three synthetic studies of one patient
(small bleed, 6 h later a large one, a day later a small one again) sent over DICOM; the
second result reports expansion against the first, the third none against the second, in
result.json and in the SR (real engine, real SQLite index, real DICOM both ways)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest
from pydicom import Dataset
from pydicom.uid import Comprehensive3DSRStorage, CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE

from dicom_node.config import parse_config
from dicom_node.jobs import JobState
from dicom_node.results.comparison import EXPANSION_ML
from dicom_node.service import NodeService
from ichnet_core.inference.engine import create_engine
from ichnet_core.models.weights import load_weights
from ichnet_core.synthetic import SyntheticConfig, generate_case, to_datasets
from tests.dicom_node.test_service import (
    JOB_TIMEOUT_S,
    NODE_AE,
    PACS_AE,
    STOP_TIMEOUT_S,
    ResultPeer,
    _wait_for_job,
    result_peer,
)

pytestmark = pytest.mark.integration
_ = result_peer  # the fixture, imported for this module

PATIENT_ID: Final[str] = "SYNTH-FOLLOWUP"
#: (seed, bleed volume range mL, StudyDate, StudyTime): small, 6 h later large, next day small.
STUDIES: Final = (
    (11, (3.0, 4.0), "20261201", "080000"),
    (12, (40.0, 45.0), "20261201", "140000"),
    (13, (3.0, 4.0), "20261202", "080000"),
)


def _study(seed: int, volume_ml: tuple[float, float], date: str, time: str) -> list[Dataset]:
    config = SyntheticConfig(
        rows=256,
        columns=256,
        hemorrhage_volume_ml=volume_ml,
        gantry_tilt_probability=0.0,
        incidental_probability=0.0,
    )
    datasets = to_datasets(generate_case(seed, config, subtypes=("CPH",)), patient_id=PATIENT_ID)
    for dataset in datasets:
        dataset.StudyDate, dataset.StudyTime = date, time
    return datasets


def _send(port: int, datasets: list[Dataset]) -> None:

    ae = AE(ae_title=PACS_AE)
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", port, ae_title=NODE_AE)
    assert assoc.is_established
    try:
        for dataset in datasets:
            assert assoc.send_c_store(dataset).Status == 0
    finally:
        assoc.release()


def _sr_items(dataset: Dataset) -> list[tuple[str, Any]]:
    """(concept meaning, value) of every NUM and CODE content item, depth first."""
    items: list[tuple[str, Any]] = []
    for item in dataset.get("ContentSequence", []):
        name = item.ConceptNameCodeSequence[0].CodeMeaning
        if item.ValueType == "NUM":
            measured = item.MeasuredValueSequence[0]
            unit = measured.MeasurementUnitsCodeSequence[0].CodeValue
            items.append((name, (float(measured.NumericValue), unit)))
        elif item.ValueType == "CODE":
            items.append((name, item.ConceptCodeSequence[0].CodeMeaning))
        items.extend(_sr_items(item))
    return items


@pytest.fixture
def node(tmp_path: Path, free_port: int, result_peer: ResultPeer) -> Iterator[NodeService]:
    weights = load_weights()
    config = parse_config(
        {
            "node": {"ae_title": NODE_AE, "port": free_port, "storage_dir": str(tmp_path)},
            "peers": [{"ae_title": PACS_AE, "host": "127.0.0.1", "port": result_peer.port}],
            "series": {"complete_after_s": 3.0},
        }
    )
    service = NodeService(config, weights=weights, engine=create_engine("torch", weights))
    service.start()
    yield service
    if any(t.name == "ichnet-worker" for t in threading.enumerate()):
        service.stop(STOP_TIMEOUT_S)


def test_growing_bleed_is_expansion_and_shrinking_is_not(
    node: NodeService, result_peer: ResultPeer, tmp_path: Path
) -> None:
    results: list[dict[str, Any]] = []
    reports: list[Dataset] = []
    for seed, volume_ml, date, time in STUDIES:
        _send(node.port, _study(seed, volume_ml, date, time))
        done = len(results) + 1
        job = _wait_for_job(
            node,
            lambda j, n=done: j.state is JobState.DONE and len(node.jobs.list_jobs()) == n,
            f"{done} DONE",
            JOB_TIMEOUT_S,
        )
        results.append(json.loads((tmp_path / "results" / str(job.id) / "result.json").read_text()))
        reports.append(
            next(
                d
                for d in reversed(result_peer.received)
                if d.SOPClassUID == Comprehensive3DSRStorage
            )
        )
    first, grown, shrunk = results
    assert first["comparison"] is None, "no prior for the patient's first study"
    volumes = [r["volumes_ml"]["hemorrhage"] for r in results]

    for result, report, prior, prior_report, interval, expansion in (
        (grown, reports[1], first, reports[0], 6.0, True),
        (shrunk, reports[2], grown, reports[1], 18.0, False),
    ):
        comparison = result["comparison"]
        change = result["volumes_ml"]["hemorrhage"] - prior["volumes_ml"]["hemorrhage"]
        assert comparison["prior_study_instance_uid"] == prior["study_instance_uid"]
        assert comparison["prior_series_instance_uid"] == prior["series_instance_uid"]
        assert comparison["prior_volume_ml"] == pytest.approx(
            prior["volumes_ml"]["hemorrhage"], abs=0.01
        )
        assert comparison["interval_hours"] == interval
        assert comparison["change_ml"] == pytest.approx(change, abs=0.01)
        assert comparison["change_percent"] == pytest.approx(
            100 * change / prior["volumes_ml"]["hemorrhage"], abs=0.01
        )
        assert comparison["expansion"] is expansion, (volumes, comparison)

        items = _sr_items(report)
        assert ("Hematoma expansion", "Present" if expansion else "Absent") in items
        assert ("Hemorrhage volume in prior study", (comparison["prior_volume_ml"], "ml")) in items
        assert (
            "Change in hemorrhage volume since prior study",
            (comparison["change_ml"], "ml"),
        ) in items
        assert ("Interval since prior study", (interval, "h")) in items
        [evidence] = report.PertinentOtherEvidenceSequence
        assert evidence.StudyInstanceUID == prior["study_instance_uid"]
        referenced = evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
        assert referenced.ReferencedSOPInstanceUID == prior_report.SOPInstanceUID
    assert volumes[1] - volumes[0] > EXPANSION_ML and volumes[2] < volumes[1]
