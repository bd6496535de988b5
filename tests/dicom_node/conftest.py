"""Fixtures for the receiving side: a real node SCP on a free loopback port."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pynetdicom.transport import ThreadedAssociationServer

from dicom_node import jobs
from dicom_node.app import start
from dicom_node.associations import ReceiveMonitor
from dicom_node.config import NodeConfig, parse_config
from dicom_node.metrics import NodeMetrics
from dicom_node.service import NodeService
from dicom_node.storage import InstanceStore, StoredInstance
from tests.dicom_node.head_study import HeadStudy, head_study
from tests.dicom_node.service_helpers import BUSY_TIMEOUT_S, PACS_AE
from tests.dicom_node.service_helpers import NODE_AE as SERVICE_AE

NODE_AE = "ICHNET"
PEER_AE = "PACS"


@dataclass
class RunningNode:
    """A started SCP and what it reported; ``stored`` fills as instances become durable."""

    config: NodeConfig
    store: InstanceStore
    metrics: NodeMetrics
    server: ThreadedAssociationServer
    stored: list[StoredInstance] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.config.node.port


NodeFactory = Callable[..., RunningNode]


@pytest.fixture
def start_node(tmp_path: Path, free_port: int) -> Iterator[NodeFactory]:
    """Start node SCPs (peer ``PACS`` allowed, called AE ``ICHNET``); all shut down afterwards.

    Call it as ``start_node()`` or ``start_node(on_stored=..., store=...)`` to inject a
    different callback or spool; ``config={"limits": {...}, "node": {...}}`` is merged into the
    test configuration section by section.
    """
    servers: list[ThreadedAssociationServer] = []

    def factory(
        on_stored: Callable[[StoredInstance], None] | None = None,
        store: InstanceStore | None = None,
        config: dict[str, Any] | None = None,
    ) -> RunningNode:
        data: dict[str, Any] = {
            "node": {
                "ae_title": NODE_AE,
                "port": free_port,
                "storage_dir": str(tmp_path / "storage"),
                "acse_timeout_s": 10,
                "dimse_timeout_s": 30,
                "network_timeout_s": 30,
            },
            "peers": [{"ae_title": PEER_AE, "host": "127.0.0.1", "port": 4242}],
        }
        for section, values in (config or {}).items():
            if isinstance(values, dict):
                data[section] = {**data.get(section, {}), **values}
            else:
                data[section] = values
        node_config = parse_config(data)
        instance_store = store or InstanceStore(node_config.node.storage_dir)
        metrics = NodeMetrics()
        stored: list[StoredInstance] = []

        def record(instance: StoredInstance) -> None:
            stored.append(instance)
            if on_stored is not None:
                on_stored(instance)

        server = start(node_config, instance_store, record, ReceiveMonitor(metrics), metrics)
        servers.append(server)
        return RunningNode(node_config, instance_store, metrics, server, stored)

    yield factory
    for server in servers:
        # AE.shutdown() stops the server and aborts associations a failed test left open.
        server.ae.shutdown()


@pytest.fixture
def node(start_node: NodeFactory) -> RunningNode:
    """One running node with the default callback (records what was stored)."""
    return start_node()


@pytest.fixture(scope="session")
def synthetic_head_study() -> HeadStudy:
    """Five series of one synthetic head CT study (soft, bone, thin, coronal MPR, scout).

    Shared by the session: tests that change a dataset work on copies (``renew_uids``).
    """
    return head_study()


@pytest.fixture
def make_service(
    tmp_path: Path, engine_cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., NodeService]]:
    monkeypatch.setattr(jobs, "BUSY_TIMEOUT_S", BUSY_TIMEOUT_S)
    services: list[NodeService] = []

    def factory(**sections: Any) -> NodeService:
        ports = []
        for _ in range(2):
            with contextlib.closing(socket.socket()) as s:
                s.bind(("127.0.0.1", 0))
                ports.append(s.getsockname()[1])
        data: dict[str, Any] = {
            "node": {
                "ae_title": SERVICE_AE,
                "port": ports[0],
                "metrics_port": ports[1],
                "storage_dir": str(tmp_path / "storage"),
            },
            "peers": [{"ae_title": PACS_AE, "host": "127.0.0.1", "port": 9}],
            "series": {"complete_after_s": 0.5, "poll_interval_s": 0.1},
            "engine": "torch",
            "model": {"cache_dir": str(engine_cache_dir)},
        }
        for name, values in sections.items():
            data[name] = {**data.get(name, {}), **values} if isinstance(values, dict) else values
        service = NodeService(parse_config(data))
        service.start()
        services.append(service)
        return service

    yield factory
    for service in services:
        service.stop(30)
