"""A real PACS in the loop: Orthanc sends a head CT to ``ichnet-node serve`` and gets SEG + SR back.

Nothing is simulated: Orthanc (the Debian package) runs on loopback with the node listed in its
DicomModalities, the node runs as its console script with a YAML config naming Orthanc as its
peer, the real GE head study is uploaded to Orthanc over REST and Orthanc C-STOREs it to the
node. The test then waits for the results to appear in the same study at Orthanc, downloads
them and checks them with dciodvfy (dicom3tools) and highdicom. A second test sends a whole
study as a PACS forwards it (soft-tissue, bone-kernel, thin, coronal MPR and scout series, derived
from the synthetic generator's output): one SEG + one SR come back, on the soft-tissue series.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    Comprehensive3DSRStorage,
    SecondaryCaptureImageStorage,
    SegmentationStorage,
)

from dicom_node.audit import read_audit
from dicom_node.cli import main as cli_main
from dicom_node.results import hemorrhage_segments
from dicom_node.results.sc import MAX_KEY_IMAGES, layout_for
from tests.dicom_node.head_study import head_study
from tests.dicom_node.results.conftest import dciodvfy_errors
from tests.integration.conftest import NODE_AE, NodeFactory, failed_so_far
from tests.integration.node_process import NodeProcess, reserve_ports, wait_until
from tests.integration.orthanc import (
    ORTHANC_BINARY,
    Orthanc,
    orthanc_available,
    start_orthanc,
)

pytestmark = [pytest.mark.integration, pytest.mark.shared_data]

logger = logging.getLogger(__name__)

ORTHANC_AE: Final[str] = "ORTHANC"
#: Orthanc's name for the node in its DicomModalities (REST: /modalities/ichnet/store).
NODE_MODALITY: Final[str] = "ichnet"
#: Short quiet period: the series is complete one second after Orthanc's last instance.
COMPLETE_AFTER_S: Final[float] = 1.0
#: Quiet period + one inference on a busy 2-core CPU + sending, with a wide margin.
RESULTS_TIMEOUT_S: Final[float] = 180.0
#: Tolerance (mm) for positions that went through DS text encoding twice.
POSITION_TOLERANCE_MM: Final[float] = 1e-3
#: Slices of the head study whose truth holds at least this share of the largest slice's brain
#: must get a SEG frame. Above the vertex the truth holds no brain (the 256 px model rightly
#: segments nothing there, so those slices get no frame); a sliver at the base or vertex may
#: go either way.
BRAIN_SLICE_SHARE: Final[float] = 0.05


@contextmanager
def _orthanc_with_node(
    tmp_path: Path,
    node_factory: NodeFactory,
    request: pytest.FixtureRequest,
    complete_after_s: float,
    outputs: list[str] | None = None,
) -> Iterator[tuple[Orthanc, NodeProcess]]:
    """Orthanc knowing the node as modality ``ichnet``, and the node knowing Orthanc as its peer
    (with ``peers[].outputs`` when given)."""
    if not orthanc_available():
        pytest.skip(f"{ORTHANC_BINARY} not installed (Debian package 'orthanc')")
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy not installed (Debian package 'dicom3tools')")
    dicom_port, http_port = reserve_ports(2)
    peer: dict[str, object] = {"ae_title": ORTHANC_AE, "host": "127.0.0.1", "port": dicom_port}
    if outputs is not None:
        peer["outputs"] = outputs
    node = node_factory(peers=[peer], complete_after_s=complete_after_s)
    orthanc_dir = tmp_path / "orthanc"
    orthanc_dir.mkdir()
    orthanc = start_orthanc(
        orthanc_dir,
        ae_title=ORTHANC_AE,
        dicom_port=dicom_port,
        http_port=http_port,
        modalities={NODE_MODALITY: [NODE_AE, "127.0.0.1", node.port]},
    )
    try:
        node.start()
        yield orthanc, node
    finally:
        orthanc.stop()
        if failed_so_far(request):
            print(f"\n===== Orthanc log =====\n{orthanc.log()}")


@pytest.fixture
def orthanc_and_node(
    tmp_path: Path, node_factory: NodeFactory, request: pytest.FixtureRequest
) -> Iterator[tuple[Orthanc, NodeProcess]]:
    """Orthanc and the node, which sends SEG, SR and key images; a series is complete one second
    after its last instance."""
    with _orthanc_with_node(
        tmp_path, node_factory, request, COMPLETE_AFTER_S, ["seg", "sr", "sc"]
    ) as pair:
        yield pair


def _series_by_modality(orthanc: Orthanc, study_id: str) -> dict[str, list[dict[str, Any]]]:
    by_modality: dict[str, list[dict[str, Any]]] = {}
    for series in orthanc.series_of_study(study_id):
        modality = series["MainDicomTags"].get("Modality", "")
        by_modality.setdefault(modality, []).append(series)
    return by_modality


def _results_arrived(
    orthanc: Orthanc, study_id: str, modalities: frozenset[str] = frozenset({"SEG", "SR"})
) -> dict[str, list[dict[str, Any]]] | None:
    by_modality = _series_by_modality(orthanc, study_id)
    return by_modality if modalities <= set(by_modality) else None


def test_orthanc_sends_a_head_ct_and_gets_seg_sr_and_key_images_back(
    orthanc_and_node: tuple[Orthanc, NodeProcess],
    head_ct_dir: Path,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    orthanc, node = orthanc_and_node
    sources = {
        ds.SOPInstanceUID: ds
        for ds in (pydicom.dcmread(p) for p in sorted(head_ct_dir.glob("*.dcm")))
    }
    uploads = [orthanc.upload(p) for p in sorted(head_ct_dir.glob("*.dcm"))]
    [study_id] = {u["ParentStudy"] for u in uploads}
    study_uid = orthanc.request("GET", f"/studies/{study_id}")["MainDicomTags"]["StudyInstanceUID"]

    job = orthanc.store_to_modality(NODE_MODALITY, [study_id])
    acknowledged = time.monotonic()  # synchronous: every instance was acknowledged by now
    assert job.get("FailedInstancesCount", 0) == 0, job
    assert job.get("InstancesCount", len(sources)) == len(sources), job

    arrived = wait_until(
        lambda: _results_arrived(orthanc, study_id, frozenset({"SEG", "SR", "OT"})),
        RESULTS_TIMEOUT_S,
        "SEG, SR and SC at Orthanc",
    )
    latency = time.monotonic() - acknowledged
    message = (
        f"last instance acknowledged -> SEG + SR + SC stored at Orthanc: {latency:.2f} s "
        f"(series.complete_after_s={COMPLETE_AFTER_S:g} s included)"
    )
    print(f"\n{message}")
    logger.info(message)
    record_property("ack_to_results_at_orthanc_s", round(latency, 3))

    # The node finishes its job (DONE) and has nothing more to send; only then count objects.
    node.wait_for_log(r"job \d+ SENDING -> DONE", RESULTS_TIMEOUT_S)
    arrived = _series_by_modality(orthanc, study_id)
    assert sorted(arrived) == ["CT", "OT", "SEG", "SR"], arrived
    assert [len(s["Instances"]) for s in arrived["SEG"]] == [1], arrived["SEG"]
    assert [len(s["Instances"]) for s in arrived["SR"]] == [1], arrived["SR"]
    assert "Traceback" not in node.log(), node.log()

    seg_path = tmp_path / "seg.dcm"
    sr_path = tmp_path / "sr.dcm"
    seg_path.write_bytes(orthanc.instance_file(arrived["SEG"][0]["Instances"][0]))
    sr_path.write_bytes(orthanc.instance_file(arrived["SR"][0]["Instances"][0]))
    [sc_series] = arrived["OT"]
    assert 1 <= len(sc_series["Instances"]) <= MAX_KEY_IMAGES, sc_series
    sc_paths = []
    for number, instance_id in enumerate(sc_series["Instances"], start=1):
        sc_paths.append(tmp_path / f"sc{number}.dcm")
        sc_paths[-1].write_bytes(orthanc.instance_file(instance_id))

    baseline: set[str] = set()
    for path in sorted(head_ct_dir.glob("*.dcm")):
        baseline |= dciodvfy_errors(path)
    checked = [("SEG", seg_path), ("SR", sr_path), *(("SC", path) for path in sc_paths)]
    for name, path in checked:
        errors = dciodvfy_errors(path)
        summary = (
            f"dciodvfy {name}: {len(errors)} distinct error(s), "
            f"{len(errors & baseline)} also in the source, new: {sorted(errors - baseline)}"
        )
        print(summary)
        logger.info(summary)
        assert errors <= baseline, summary

    seg = hd.seg.segread(seg_path)
    sr = hd.sr.srread(sr_path)
    assert seg.StudyInstanceUID == sr.StudyInstanceUID == study_uid
    assert seg.SeriesInstanceUID != sr.SeriesInstanceUID
    assert {seg.SeriesInstanceUID, sr.SeriesInstanceUID}.isdisjoint(
        {ds.SeriesInstanceUID for ds in sources.values()}
    )
    _check_seg_frames(seg, sources)
    _check_sr_references(sr, seg)
    for path in sc_paths:
        _check_key_image(pydicom.dcmread(path), seg, sources)


def _check_key_image(
    image: pydicom.Dataset, seg: hd.seg.Segmentation, sources: dict[str, pydicom.Dataset]
) -> None:
    """A key image of the study references one source slice and is coloured exactly where the
    SEG has blood on that slice (the model's real output: a representative slice without any
    colour when it found none)."""
    assert image.StudyInstanceUID == seg.StudyInstanceUID
    assert image.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage
    [reference] = image.SourceImageSequence
    uid = reference.ReferencedSOPInstanceUID
    assert uid in sources
    layout = layout_for(int(sources[uid].Rows), int(sources[uid].Columns))
    numbers = sorted(hemorrhage_segments(seg).values())
    blood = seg.get_pixels_by_source_instance([uid], segment_numbers=numbers)[0].any(axis=-1)
    area = image.pixel_array[layout.banner_rows : layout.banner_rows + layout.slice_rows]
    area = area.astype(int)
    coloured = (area[..., 0] != area[..., 1]) | (area[..., 1] != area[..., 2])
    np.testing.assert_array_equal(coloured, blood)


def _check_seg_frames(
    seg: hd.seg.Segmentation,
    sources: dict[str, pydicom.Dataset],
    required: set[str] | None = None,
) -> None:
    """Each frame names one source slice and sits exactly where that slice is; every slice of
    ``required`` (default: all) has frames. A slice where the model segments nothing has none."""
    frames = seg.PerFrameFunctionalGroupsSequence
    assert len(frames) == int(seg.NumberOfFrames) > 0
    covered: set[str] = set()
    for index, frame in enumerate(frames, start=1):
        [derivation] = frame.DerivationImageSequence
        [source_image] = derivation.SourceImageSequence
        uid = source_image.ReferencedSOPInstanceUID
        assert uid in sources, f"frame {index} references {uid}, not a slice of the study"
        [plane] = frame.PlanePositionSequence
        np.testing.assert_allclose(
            np.asarray(plane.ImagePositionPatient, dtype=float),
            np.asarray(sources[uid].ImagePositionPatient, dtype=float),
            atol=POSITION_TOLERANCE_MM,
            err_msg=f"frame {index} (source {uid})",
        )
        covered.add(uid)
    missing = (set(sources) if required is None else required) - covered
    assert not missing, f"source slices without frames: {sorted(missing)}"


def _check_sr_references(sr: hd.sr.Comprehensive3DSR, seg: hd.seg.Segmentation) -> None:
    """The SR's evidence lists the SEG (its hemorrhage volume measures a SEG segment)."""
    evidence = {
        item.ReferencedSOPInstanceUID
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    }
    assert seg.SOPInstanceUID in evidence


#: A whole study goes out in one Orthanc job, series after series; the quiet period only has to
#: bridge the switch from one series to the next on a busy CI machine.
STUDY_COMPLETE_AFTER_S: Final[float] = 3.0


@pytest.fixture
def orthanc_and_node_for_studies(
    tmp_path: Path, node_factory: NodeFactory, request: pytest.FixtureRequest
) -> Iterator[tuple[Orthanc, NodeProcess]]:
    """Orthanc and the node with the default ``selection.per_study: one``."""
    with _orthanc_with_node(tmp_path, node_factory, request, STUDY_COMPLETE_AFTER_S) as pair:
        yield pair


def _all_jobs_finished(node: NodeProcess, count: int) -> list[dict[str, Any]] | None:
    jobs = node.jobs()
    finished = [j for j in jobs if j["state"] in ("DONE", "SKIPPED", "FAILED")]
    return jobs if len(jobs) >= count and len(finished) == len(jobs) else None


def test_a_whole_head_study_gets_one_seg_and_sr_on_its_soft_tissue_series(
    orthanc_and_node_for_studies: tuple[Orthanc, NodeProcess], tmp_path: Path
) -> None:
    """Issue 13: soft-tissue + bone kernel + thin + coronal MPR + scout, sent together."""
    orthanc, node = orthanc_and_node_for_studies
    study = head_study()
    files = study.write(tmp_path / "study")
    uploads = [orthanc.upload(p) for paths in files.values() for p in paths]
    [study_id] = {u["ParentStudy"] for u in uploads}
    job = orthanc.store_to_modality(NODE_MODALITY, [study_id])
    assert job.get("FailedInstancesCount", 0) == 0, job

    uid = {name: str(datasets[0].SeriesInstanceUID) for name, datasets in study.series.items()}
    jobs = wait_until(
        lambda: _all_jobs_finished(node, len(uid)), RESULTS_TIMEOUT_S, "every job finished"
    )
    by_series = {j["series_instance_uid"]: j for j in jobs}
    assert len(jobs) == len(uid) == len(by_series), jobs
    assert by_series[uid["soft"]]["state"] == "DONE", by_series[uid["soft"]]
    instead = (
        f"skipped: series {uid['soft']} of this study was analysed instead "
        "(soft-tissue kernel, 5.0 mm)"
    )
    for name in ("bone", "thin"):
        assert (by_series[uid[name]]["state"], by_series[uid[name]]["reason"]) == (
            "SKIPPED",
            instead,
        )
    assert by_series[uid["coronal"]]["state"] == "SKIPPED"
    assert "not an axial series" in by_series[uid["coronal"]]["reason"]
    assert (by_series[uid["scout"]]["state"], by_series[uid["scout"]]["reason"]) == (
        "SKIPPED",
        "skipped: a localizer (ImageType ORIGINAL\\PRIMARY\\LOCALIZER): "
        "projection images are never analysed",
    )

    arrived = _series_by_modality(orthanc, study_id)
    assert sorted(arrived) == ["CT", "SEG", "SR"], arrived
    assert [len(s["Instances"]) for s in arrived["SEG"]] == [1], arrived["SEG"]
    assert [len(s["Instances"]) for s in arrived["SR"]] == [1], arrived["SR"]
    seg_path, sr_path = tmp_path / "seg.dcm", tmp_path / "sr.dcm"
    seg_path.write_bytes(orthanc.instance_file(arrived["SEG"][0]["Instances"][0]))
    sr_path.write_bytes(orthanc.instance_file(arrived["SR"][0]["Instances"][0]))
    seg = hd.seg.segread(seg_path)
    sr = hd.sr.srread(sr_path)
    assert [s.SeriesInstanceUID for s in seg.ReferencedSeriesSequence] == [uid["soft"]]
    _check_seg_frames(
        seg,
        {str(ds.SOPInstanceUID): ds for ds in study.soft},
        {str(ds.SOPInstanceUID) for ds in study.soft_with_brain(BRAIN_SLICE_SHARE)},
    )
    _check_sr_references(sr, seg)
    evidence_series = {
        series.SeriesInstanceUID
        for item in sr.CurrentRequestedProcedureEvidenceSequence
        for series in item.ReferencedSeriesSequence
    }
    assert uid["soft"] in evidence_series
    assert evidence_series.isdisjoint({uid[n] for n in ("bone", "thin", "coronal", "scout")})
    assert "Traceback" not in node.log(), node.log()


def _instances_of(orthanc: Orthanc, study_id: str, modality: str) -> list[str]:
    """SOP Instance UIDs Orthanc holds in the study for ``modality``."""
    uids = []
    for series in _series_by_modality(orthanc, study_id).get(modality, []):
        for instance in series["Instances"]:
            tags = orthanc.request("GET", f"/instances/{instance}/simplified-tags")
            uids.append(tags["SOPInstanceUID"])
    return sorted(uids)


def test_a_late_instance_gives_result_version_2_under_new_uids_and_orthanc_keeps_both(
    orthanc_and_node: tuple[Orthanc, NodeProcess], head_ct_dir: Path
) -> None:
    orthanc, node = orthanc_and_node
    uploads = [orthanc.upload(p) for p in sorted(head_ct_dir.glob("*.dcm"))]
    [study_id] = {u["ParentStudy"] for u in uploads}
    *first_batch, late = [u["ID"] for u in uploads]

    done = r"job (\d+) SENDING -> DONE"
    orthanc.store_to_modality(NODE_MODALITY, first_batch)
    first = int(node.wait_for_log(done, RESULTS_TIMEOUT_S).group(1))
    before = node.log_size()
    orthanc.store_to_modality(NODE_MODALITY, [late])  # the straggler, after the first result
    second = int(node.wait_for_log(done, RESULTS_TIMEOUT_S, since=before).group(1))

    jobs = node.jobs()
    assert [(j["id"], j["state"], j["result_version"]) for j in jobs] == [
        (first, "DONE", 1),
        (second, "DONE", 2),
    ]
    results = [
        json.loads((node.storage_dir / "results" / str(j["id"]) / "result.json").read_text())
        for j in jobs
    ]
    assert [r["result_version"] for r in results] == [1, 2]
    assert [len(r["slices"]) for r in results] == [len(uploads) - 1, len(uploads)]
    # The kept copies, as sent: SEG, SR and the key images (this peer's outputs include sc).
    kept: dict[int, dict[str, list[str]]] = {}
    for j in jobs:
        by_class = kept.setdefault(int(j["id"]), {})
        for path in sorted((node.storage_dir / "results" / str(j["id"])).glob("*.dcm")):
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            by_class.setdefault(str(ds.SOPClassUID), []).append(str(ds.SOPInstanceUID))
    every = {
        job: sorted(u for uids in by_class.values() for u in uids) for job, by_class in kept.items()
    }
    assert all(len(kept[j][SecondaryCaptureImageStorage]) >= 1 for j in kept), "key images kept"
    # Version 2 is new content under new UIDs (SEG, SR and key images); Orthanc holds both
    # versions side by side.
    assert set(every[first]).isdisjoint(every[second])
    assert _instances_of(orthanc, study_id, "SEG") == sorted(
        kept[first][SegmentationStorage] + kept[second][SegmentationStorage]
    )
    assert _instances_of(orthanc, study_id, "SR") == sorted(
        kept[first][Comprehensive3DSRStorage] + kept[second][Comprehensive3DSRStorage]
    )
    sent = [r for r in read_audit(node.storage_dir / "audit" / "audit.jsonl")]
    sent = [r for r in sent if r["event"] == "results_sent"]
    assert [sorted(r["sop_instance_uids"]) for r in sent] == [every[first], every[second]]
    assert {(r["called_ae"], r["peer_address"]) for r in sent} == {
        (ORTHANC_AE, f"127.0.0.1:{orthanc.dicom_port}")
    }

    # An operator resends version 1 (the node keeps running): the same objects arrive again,
    # so Orthanc still holds exactly two SEG and two SR instances.
    before = node.log_size()
    assert cli_main(["jobs", "resend", str(first), "--config", str(node.config_path)]) == 0
    node.wait_for_log(rf"job {first} SENDING -> DONE", RESULTS_TIMEOUT_S, since=before)
    assert len(_instances_of(orthanc, study_id, "SEG")) == 2
    assert len(_instances_of(orthanc, study_id, "SR")) == 2
    assert "Traceback" not in node.log()
    # Spool, kept results, result.json, outbox, job database, audit trail: all private.
    modes = {p: p.stat().st_mode & 0o777 for p in node.storage_dir.rglob("*")}
    assert {m for p, m in modes.items() if p.is_dir()} == {0o700}, modes
    assert {m for p, m in modes.items() if p.is_file()} == {0o600}, modes
