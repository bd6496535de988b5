"""What lives where under ``node.storage_dir``: the one place that names the spool's folders.

The folder and file names are a contract (../shared/DESIGN.md): admins back them up, tests and
benchmarks read them, and after an upgrade the node must find what the previous version left.
Every module that touches the storage directory asks :class:`StorageLayout` instead of joining
names itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StorageLayout:
    """The paths under one storage directory (nothing is created here).

    Attributes
    ----------
    root:
        ``node.storage_dir``.
    """

    root: Path

    @property
    def incoming(self) -> Path:
        """The spool: ``incoming/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``."""
        return self.root / "incoming"

    @property
    def results(self) -> Path:
        """``results/<job>/result.json``: what was found, per job."""
        return self.root / "results"

    @property
    def outbox(self) -> Path:
        """``outbox/<job>/NN-<name>.dcm``: result objects until the peer acknowledged them."""
        return self.root / "outbox"

    @property
    def notifications(self) -> Path:
        """``notifications/<job>-<n>.json``: pending notification posts until delivered."""
        return self.root / "notifications"

    @property
    def priors_db(self) -> Path:
        """Earlier results per patient (identifiers and volumes) for follow-up comparisons."""
        return self.root / "priors.sqlite3"

    @property
    def jobs_db(self) -> Path:
        """The job queue (SQLite, WAL)."""
        return self.root / "jobs.sqlite3"

    @property
    def audit_log(self) -> Path:
        """The audit trail, one JSON object per line (DESIGN.md)."""
        return self.root / "audit" / "audit.jsonl"

    @property
    def engine_cache(self) -> Path:
        """Engine artefacts (ONNX exports, TensorRT plans, the auto decision) unless
        ``model.cache_dir`` names another folder."""
        return self.root / "engine-cache"

    def result_dir(self, job_id: int) -> Path:
        """The folder of job ``job_id``'s result.json."""
        return self.results / str(job_id)
