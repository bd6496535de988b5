"""The storage layout is a contract (DESIGN.md): admins, backups and upgrades rely on the names."""

from __future__ import annotations

from pathlib import Path

from dicom_node.config import NodeConfig, engine_cache_dir
from dicom_node.jobs import JobStore
from dicom_node.layout import StorageLayout
from dicom_node.outbox import Outbox
from dicom_node.storage import InstanceStore


def test_names_under_the_storage_dir_are_those_of_the_design(tmp_path: Path) -> None:
    layout = StorageLayout(tmp_path)
    assert layout.incoming == tmp_path / "incoming"
    assert layout.results == tmp_path / "results"
    assert layout.result_dir(12) == tmp_path / "results" / "12"
    assert layout.outbox == tmp_path / "outbox"
    assert layout.jobs_db == tmp_path / "jobs.sqlite3"
    assert layout.audit_log == tmp_path / "audit" / "audit.jsonl"
    assert layout.engine_cache == tmp_path / "engine-cache"


def test_every_store_takes_its_place_from_the_layout(tmp_path: Path) -> None:
    config = NodeConfig(node={"storage_dir": str(tmp_path)})
    layout = config.node.layout
    assert layout == StorageLayout(tmp_path)
    assert InstanceStore(tmp_path).incoming_dir == layout.incoming
    assert Outbox.for_storage_dir(tmp_path).root == layout.outbox
    with JobStore.for_storage_dir(tmp_path) as jobs:
        assert jobs.path == layout.jobs_db
    assert engine_cache_dir(config) == layout.engine_cache
