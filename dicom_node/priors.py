"""The node's memory of earlier results per patient, for follow-up comparisons.

One row per finished analysis (series and result version) in ``<storage_dir>/priors.sqlite3``:
the patient key (PatientID + IssuerOfPatientID), StudyDate + StudyTime, the UIDs of the series
and of its SR, and the volumes. Only numbers and identifiers are kept (no images, no names),
so the comparison still works after retention removed an old study's spool and results.

Its own small database, not a table of the job queue: the queue's life cycle (rows per batch,
states, retention) is another concern, and the index is written once per result, never on the
per-instance hot path.
"""

from __future__ import annotations

import datetime
import json
import logging
import sqlite3
import threading
from pathlib import Path
from typing import Final

from pydicom import Dataset

from dicom_node.results.comparison import PatientKey, PriorResult, study_datetime
from dicom_node.results.volumes import HemorrhageVolumes
from dicom_node.storage import create_private_file, make_private_dirs

logger = logging.getLogger(__name__)

#: Bumped whenever the table layout changes; an unknown version is refused, never guessed at.
SCHEMA_VERSION: Final[int] = 1
_SCHEMA: Final[str] = """
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    patient_id TEXT NOT NULL,
    issuer TEXT NOT NULL,
    study_datetime TEXT NOT NULL,
    study_instance_uid TEXT NOT NULL,
    series_instance_uid TEXT NOT NULL,
    sr_series_instance_uid TEXT NOT NULL,
    sr_sop_instance_uid TEXT NOT NULL,
    volume_ml REAL NOT NULL,
    compartments_ml TEXT
);
CREATE INDEX IF NOT EXISTS results_by_patient ON results (patient_id, issuer, study_datetime)
"""


class PriorIndex:
    """Earlier results by patient (see the module docstring); safe across threads.

    Parameters
    ----------
    path:
        ``StorageLayout.priors_db``; created with its folder when missing.

    Raises
    ------
    RuntimeError
        If the file has a schema version this node does not understand.
    """

    def __init__(self, path: Path) -> None:
        make_private_dirs(path.parent)
        # 0600 before SQLite opens it (its -wal and -shm files get the same mode): the index
        # holds PatientIDs. A file an earlier version created is tightened too.
        create_private_file(path)
        self.path = path
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            raise RuntimeError(
                f"{path}: prior index has schema version {version}, this node understands "
                f"{SCHEMA_VERSION}; move the file aside or upgrade"
            )
        self._conn.executescript(_SCHEMA)
        self._conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def latest_before(
        self, patient: PatientKey, before: datetime.datetime, study_instance_uid: str
    ) -> PriorResult | None:
        """The patient's result whose study date/time is the latest before ``before`` (another
        study); of several results of that study, the one recorded last."""
        with self._lock:
            row = self._conn.execute(
                "SELECT study_instance_uid, series_instance_uid, study_datetime, volume_ml, "
                "compartments_ml, sr_series_instance_uid, sr_sop_instance_uid FROM results "
                "WHERE patient_id = ? AND issuer = ? AND study_datetime < ? "
                "AND study_instance_uid != ? ORDER BY study_datetime DESC, id DESC LIMIT 1",
                (patient.patient_id, patient.issuer, before.isoformat(), study_instance_uid),
            ).fetchone()
        if row is None:
            return None
        compartments = json.loads(row[4]) if row[4] is not None else None
        return PriorResult(
            study_instance_uid=row[0],
            series_instance_uid=row[1],
            study_datetime=datetime.datetime.fromisoformat(row[2]),
            volume_ml=float(row[3]),
            compartments_ml=compartments,
            sr_series_instance_uid=row[5],
            sr_sop_instance_uid=row[6],
        )

    def record(
        self,
        patient: PatientKey,
        when: datetime.datetime,
        *,
        study_instance_uid: str,
        series_instance_uid: str,
        sr_series_instance_uid: str,
        sr_sop_instance_uid: str,
        volumes: HemorrhageVolumes,
    ) -> None:
        """Remember one finished result."""
        compartments = (
            json.dumps(dict(volumes.compartments_ml))
            if volumes.compartments_ml is not None
            else None
        )
        with self._lock:
            self._conn.execute(
                "INSERT INTO results (patient_id, issuer, study_datetime, study_instance_uid, "
                "series_instance_uid, sr_series_instance_uid, sr_sop_instance_uid, volume_ml, "
                "compartments_ml) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    patient.patient_id,
                    patient.issuer,
                    when.isoformat(),
                    study_instance_uid,
                    series_instance_uid,
                    sr_series_instance_uid,
                    sr_sop_instance_uid,
                    volumes.total_ml,
                    compartments,
                ),
            )

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._conn.close()


def find_prior(index: PriorIndex, source: Dataset) -> PriorResult | None:
    """The prior result for the series of ``source`` (a source header), or ``None``.

    ``None`` also when the patient or the study date cannot be told, and when the index cannot
    be read: a comparison is an extra, never a reason to hold back a result (logged).
    """
    patient = PatientKey.of(source)
    when = study_datetime(source)
    if patient is None or when is None:
        return None
    try:
        return index.latest_before(patient, when, str(source.StudyInstanceUID))
    except sqlite3.Error:
        logger.exception("prior index %s cannot be read; no comparison", index.path)
        return None


def remember_result(
    index: PriorIndex, source: Dataset, sr: Dataset, volumes: HemorrhageVolumes
) -> None:
    """Record a finished result so that later studies of the patient compare with it."""
    patient = PatientKey.of(source)
    when = study_datetime(source)
    if patient is None or when is None:
        return
    try:
        index.record(
            patient,
            when,
            study_instance_uid=str(source.StudyInstanceUID),
            series_instance_uid=str(source.SeriesInstanceUID),
            sr_series_instance_uid=str(sr.SeriesInstanceUID),
            sr_sop_instance_uid=str(sr.SOPInstanceUID),
            volumes=volumes,
        )
    except sqlite3.Error:
        logger.exception("prior index %s cannot be written; later studies see no prior", index.path)
