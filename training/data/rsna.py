"""RSNA 2019 Intracranial Hemorrhage Detection (Flanders et al., Radiology: AI 2020).

Layout as distributed on Kaggle::

    stage_2_train/ID_12cadc6af.dcm ...   one DICOM file per slice, named by its SOP Instance UID
    stage_2_train.csv                    ID,Label with one row per slice and label:
                                         ID_12cadc6af_epidural,0
                                         ID_12cadc6af_intraparenchymal,0 ... ID_12cadc6af_any,0

Labels are per slice (any + 5 subtypes); there are no outlines. Series are assembled by
(StudyInstanceUID, SeriesInstanceUID) and built with the node's volume builder (sorted along the
normal, HU by RescaleSlope/RescaleIntercept). The subject label is derived from the slices of
the series. Splits group by PatientID: one patient can have several studies.

The de-identified files carry non-standard UIDs (``ID_...``) and no FrameOfReferenceUID or
SliceThickness. pydicom warns about every such UID; the loader silences exactly that warning
(once per slice it would flood the log) and reads the files as they are.

Indexing 750k headers takes a while; pass ``index_path`` to keep the index as JSON.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import numpy as np
from tqdm import tqdm

from ichnet_core.labels import CLASS_NAMES
from training.data.case import LabelledCase, subject_from_slices, unknown_labels
from training.data.csv_utils import LabelFileError, binary, read_rows
from training.data.dicom_series import case_from_volume, load_volume, read_header
from training.data.source import CaseEntry, CaseSource

logger = logging.getLogger(__name__)

LABELS_CSV: Final[str] = "stage_2_train.csv"
IMAGE_DIR: Final[str] = "stage_2_train"
#: RSNA label names and the class each is.
RSNA_LABELS: Final[dict[str, str]] = {
    "any": "any",
    "intraparenchymal": "CPH",
    "intraventricular": "IVH",
    "epidural": "EDH",
    "subdural": "SDH",
    "subarachnoid": "SAH",
}
INDEX_FORMAT: Final[str] = "ichnet-rsna-index/1"
_HEADER_TAGS: Final[tuple[str, ...]] = (
    "SOPInstanceUID",
    "PatientID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
)


#: pydicom's warning for the ``ID_...`` UIDs of the RSNA files.
_UID_WARNING: Final[str] = "Invalid value for VR UI"


class _UidWarningFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(_UID_WARNING)


@contextmanager
def _rsna_uids_accepted() -> Iterator[None]:
    """Silence pydicom's warning (and its log record) about the ``ID_...`` UIDs only."""
    pydicom_logger = logging.getLogger("pydicom")
    record_filter = _UidWarningFilter()
    pydicom_logger.addFilter(record_filter)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_UID_WARNING)
            yield
    finally:
        pydicom_logger.removeFilter(record_filter)


def read_labels(path: Path) -> dict[str, np.ndarray]:
    """``{SOP Instance UID: (6,) labels}`` from ``stage_2_train.csv`` (NaN for absent rows).

    The file holds a few repeated rows; identical repeats are accepted, contradicting ones are
    an error.

    Raises
    ------
    LabelFileError
        Malformed IDs, unknown label names, values other than 0/1, contradicting duplicates.
    """
    labels: dict[str, np.ndarray] = {}
    for line, row in read_rows(path, ["ID", "Label"]):
        sop, _, name = row["ID"].rpartition("_")
        if not sop or name not in RSNA_LABELS:
            raise LabelFileError(
                f"{path}:{line}: ID {row['ID']!r} is not ID_<image>_<label> with a label in "
                f"{sorted(RSNA_LABELS)}"
            )
        value = binary(path, line, "Label", row["Label"])
        column = CLASS_NAMES.index(RSNA_LABELS[name])
        values = labels.setdefault(sop, unknown_labels())
        if not np.isnan(values[column]) and values[column] != value:
            raise LabelFileError(f"{path}:{line}: {row['ID']} repeated with a different label")
        values[column] = value
    return labels


class RsnaSource(CaseSource):
    """RSNA series with at least one labelled slice.

    Parameters
    ----------
    root:
        Folder with the image folder and the CSV.
    labels_csv, image_dir:
        Names inside ``root``.
    index_path:
        JSON file to keep the header index in (built when missing).
    """

    name = "rsna"

    def __init__(
        self,
        root: Path,
        *,
        labels_csv: str = LABELS_CSV,
        image_dir: str = IMAGE_DIR,
        index_path: Path | None = None,
    ) -> None:
        self.root = Path(root)
        self.image_dir = self.root / image_dir
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"RSNA: image folder {self.image_dir} not found")
        self.labels = read_labels(self.root / labels_csv)
        index = self._load_index(index_path)
        series: dict[tuple[str, str], list[tuple[str, str]]] = {}
        patients: dict[tuple[str, str], str] = {}
        for name, sop, patient, study, series_uid in index:
            if sop in self.labels:
                series.setdefault((study, series_uid), []).append((name, sop))
                patients[(study, series_uid)] = patient
        ordered = sorted(series, key=lambda key: (patients[key], key))
        self._series = tuple((key, tuple(sorted(series[key]))) for key in ordered)
        self._entries = tuple(
            CaseEntry(case_id=f"{self.name}/{key[1]}", group_id=f"{self.name}/{patients[key]}")
            for key in ordered
        )
        logger.info(
            "RSNA at %s: %d labelled slices in %d series of %d patients",
            self.root,
            sum(len(files) for _, files in self._series),
            len(self._series),
            len(set(patients.values())),
        )

    def _load_index(self, index_path: Path | None) -> list[tuple[str, str, str, str, str]]:
        if index_path is not None and Path(index_path).is_file():
            stored: dict[str, Any] = json.loads(Path(index_path).read_text(encoding="utf-8"))
            if stored.get("format") == INDEX_FORMAT and stored.get("image_dir") == str(
                self.image_dir
            ):
                return [
                    (str(a), str(b), str(c), str(d), str(e)) for a, b, c, d, e in stored["files"]
                ]
            logger.warning("%s is not an index of %s; rebuilding it", index_path, self.image_dir)
        files = sorted(p for p in self.image_dir.iterdir() if p.suffix.lower() == ".dcm")
        index = []
        for path in tqdm(files, desc="RSNA headers", unit="file", disable=len(files) < 1000):
            with _rsna_uids_accepted():
                ds = read_header(path, _HEADER_TAGS)
            index.append(
                (
                    path.name,
                    str(ds.get("SOPInstanceUID", path.stem)),
                    str(ds.get("PatientID", "")),
                    str(ds.StudyInstanceUID),
                    str(ds.SeriesInstanceUID),
                )
            )
        if index_path is not None:
            payload = {"format": INDEX_FORMAT, "image_dir": str(self.image_dir), "files": index}
            Path(index_path).parent.mkdir(parents=True, exist_ok=True)
            Path(index_path).write_text(json.dumps(payload), encoding="utf-8")
        return index

    @property
    def entries(self) -> Sequence[CaseEntry]:
        return self._entries

    def load(self, index: int) -> LabelledCase:
        _, files = self._series[index]
        entry = self._entries[index]
        with _rsna_uids_accepted():
            volume = load_volume([self.image_dir / name for name, _ in files])
        slice_labels = np.stack(
            [self.labels.get(sop, unknown_labels()) for sop in volume.sop_instance_uids]
        ).astype(np.float32)
        return case_from_volume(
            volume,
            case_id=entry.case_id,
            group_id=entry.group_id,
            slice_labels=slice_labels,
            subject_labels=subject_from_slices(slice_labels),
        )
