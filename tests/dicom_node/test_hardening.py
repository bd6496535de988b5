"""The running node under a security review: audit trail, file modes, disk watermark, retention.

Each test starts a real NodeService on loopback (torch engine, no inference needed: the series
sent are not heads and are skipped) and talks DICOM to it with pynetdicom, or raw bytes for the
transport limit. Nothing is stubbed: the free space is the file system's own, lowered by a real
preallocated file.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicom_node.audit import AuditEvent, read_audit
from dicom_node.free_space import LOW_DISK_REASON
from dicom_node.jobs import JobState
from dicom_node.service import NodeService
from dicom_node.status import (
    PresentationProviderRejectReason,
    RejectResult,
    RejectSource,
    StoreStatus,
)
from tests.dicom_node.service_helpers import (
    NODE_AE,
    PACS_AE,
    non_head_series,
    send_datasets,
    wait_for,
)

pytestmark = pytest.mark.integration

#: The audit record's keys (DESIGN.md); UID keys appear only when the event concerns them.
FIXED_KEYS: Final[set[str]] = {
    "time",
    "event",
    "calling_ae",
    "called_ae",
    "peer_address",
    "status",
    "reason",
}
UID_KEYS: Final[set[str]] = {
    "study_instance_uid",
    "series_instance_uid",
    "sop_instance_uid",
    "sop_instance_uids",
}
PATIENT_NAME: Final[str] = "Geheim^Patientin"
BIRTH_DATE: Final[str] = "19580423"
#: Room kept between the watermark and the real free space, both ways (other processes write
#: to the same disk while the test runs).
MARGIN: Final[int] = 512 * 1024**2


def _associate(port: int, calling_ae: str = PACS_AE) -> Association:
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.dimse_timeout = 30
    return ae.associate("127.0.0.1", port, ae_title=NODE_AE)


def _audit(service: NodeService) -> list[dict[str, object]]:
    return read_audit(service.audit.path)


def test_every_event_is_audited_without_patient_identity_and_every_file_is_private(
    make_service: Callable[..., NodeService],
) -> None:
    service = make_service(
        peers=[
            {"ae_title": PACS_AE, "host": "127.0.0.1", "port": 9},
            {"ae_title": "FAR_AWAY", "host": "127.0.0.2", "port": 104},
        ]
    )
    series = non_head_series(3)
    for ds in series:
        ds.PatientName, ds.PatientBirthDate, ds.PatientID = PATIENT_NAME, BIRTH_DATE, "P-77"
    send_datasets(service, series)
    wait_for(lambda: service.jobs.list_jobs(["SKIPPED"]), "the series to be skipped")

    # A refused instance (no Study Instance UID), a calling AE title
    # nobody configured, a configured one from the wrong host, and a PDU beyond the limit.
    assoc = _associate(service.port)
    [bad] = non_head_series(1)
    bad.PatientName = PATIENT_NAME
    del bad.StudyInstanceUID
    status = assoc.send_c_store(bad)
    assoc.release()
    assert (
        status is not None and status.Status == StoreStatus.ERROR_DATA_SET_DOES_NOT_MATCH_SOP_CLASS
    )
    assert not _associate(service.port, "STRANGER").is_established
    assert not _associate(service.port, "FAR_AWAY").is_established
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as raw:
        raw.sendall(b"\x01\x00" + struct.pack(">I", 2**31))  # A-ASSOCIATE-RQ of 2 GiB
        assert raw.recv(64) is not None  # the node answers (A-ABORT) and closes

    records = wait_for(
        lambda: (
            (r := _audit(service))
            and sum(x["event"] == "association_rejected" for x in r) >= 3
            and r
        ),
        "the rejections in the audit trail",
    )
    events = [r["event"] for r in records]
    for record in records:
        assert FIXED_KEYS <= set(record) <= FIXED_KEYS | UID_KEYS, record
        assert str(record["time"]).endswith("+00:00")
    text = service.audit.path.read_text()
    assert PATIENT_NAME not in text and "Geheim" not in text and BIRTH_DATE not in text

    stored = [r for r in records if r["event"] == AuditEvent.INSTANCE_STORED]
    assert sorted(str(r["sop_instance_uid"]) for r in stored) == sorted(
        str(ds.SOPInstanceUID) for ds in series
    )
    assert {(r["calling_ae"], r["called_ae"], r["status"]) for r in stored} == {
        (PACS_AE, NODE_AE, "0x0000")
    }
    assert {r["series_instance_uid"] for r in stored} == {str(series[0].SeriesInstanceUID)}
    [refused] = [r for r in records if r["event"] == AuditEvent.INSTANCE_REFUSED]
    assert (refused["sop_instance_uid"], refused["status"]) == (bad.SOPInstanceUID, "0xA900")
    assert refused["reason"] == "StudyInstanceUID is missing"
    [skipped] = [r for r in records if r["event"] == AuditEvent.JOB_SKIPPED]
    assert skipped["series_instance_uid"] == str(series[0].SeriesInstanceUID)
    rejected = {r["status"]: r for r in records if r["event"] == AuditEvent.ASSOCIATION_REJECTED}
    assert rejected["calling_ae_title_not_recognized"]["calling_ae"] == "STRANGER"
    assert "127.0.0.2" in str(rejected["calling_ae_host_mismatch"]["reason"])
    assert "max_pdu_bytes" in str(rejected["pdu_too_large"]["reason"])
    assert events.count("association_accepted") == 2

    storage = Path(service.config.node.storage_dir)
    seen = 0
    for folder, _dirs, files in os.walk(storage):
        assert os.stat(folder).st_mode & 0o777 == 0o700, folder
        for name in files:
            assert os.stat(Path(folder) / name).st_mode & 0o777 == 0o600, name
            seen += 1
    assert seen >= 3 + 3 + 1  # three instances, job database + WAL + SHM, audit trail


def test_below_the_watermark_nothing_new_is_taken_and_above_it_again(
    make_service: Callable[..., NodeService], tmp_path: Path
) -> None:
    storage = tmp_path / "storage"
    storage.mkdir()
    free = shutil.disk_usage(storage).free
    service = make_service(storage={"min_free_bytes": free - MARGIN})
    assoc = _associate(service.port)
    assert assoc.is_established
    first, second, third = non_head_series(3)
    assert assoc.send_c_store(first).Status == StoreStatus.SUCCESS

    # A real file takes twice the margin: free space is now MARGIN below the watermark.
    ballast = storage / "ballast"
    with open(ballast, "wb") as fh:
        os.posix_fallocate(fh.fileno(), 0, 2 * MARGIN)
    try:
        rsp = assoc.send_c_store(second)
        assert rsp.Status == StoreStatus.REFUSED_OUT_OF_RESOURCES
        assert "min_free_bytes" in rsp.ErrorComment
        report = service.health_report()
        assert report.failing == ("storage",)
        assert "below storage.min_free_bytes" in report.parts["storage"]
        rejected = _associate(service.port)
        assert rejected.is_rejected
        rj = rejected.acceptor.primitive
        assert (rj.result, rj.result_source, rj.diagnostic) == (
            RejectResult.REJECTED_TRANSIENT,
            RejectSource.SERVICE_PROVIDER_PRESENTATION,
            PresentationProviderRejectReason.LOCAL_LIMIT_EXCEEDED,
        )
    finally:
        ballast.unlink()

    assert assoc.send_c_store(second).Status == StoreStatus.SUCCESS
    assert assoc.send_c_store(third).Status == StoreStatus.SUCCESS
    assoc.release()
    again = _associate(service.port)
    assert again.is_established
    again.release()
    assert service.health_report().healthy
    assert not list(storage.glob("incoming/*/*/.*")), "nothing half-written in the spool"
    records = _audit(service)
    low = [r for r in records if r["status"] == LOW_DISK_REASON]
    assert len(low) == 1 and low[0]["event"] == "association_rejected"
    [refused] = [r for r in records if r["event"] == "instance_refused"]
    assert refused["status"] == "0xA700" and "storage.min_free_bytes" in str(refused["reason"])


@pytest.fixture
def skipped_then_expired(
    make_service: Callable[..., NodeService],
) -> Iterator[NodeService]:
    # retention_hours 0.0005 = 1.8 s: the retention loop's real clock does the waiting.
    yield make_service(storage={"retention_hours": 0.0005, "retention_interval_s": 0.2})


def test_the_retention_loop_removes_a_finished_series_from_the_spool(
    skipped_then_expired: NodeService,
) -> None:
    service = skipped_then_expired
    series = non_head_series(3)
    send_datasets(service, series)
    job = wait_for(lambda: service.jobs.list_jobs([JobState.SKIPPED]), "the skip")[0]
    folder = service.store.series_dir(job.study_instance_uid, job.series_instance_uid)
    assert len(list(folder.glob("*.dcm"))) == 3
    wait_for(lambda: service.jobs.get(job.id).purged_at is not None, "retention", 30)
    assert not folder.exists()
    assert service.health_report().parts["retention"].startswith("ok")
