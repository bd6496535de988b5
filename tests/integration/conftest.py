"""Fixtures for end-to-end tests: the node as a subprocess, its logs shown when a test fails."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.node_process import NodeProcess, reserve_ports, write_node_config

#: AE titles of the loopback set-up: the node, and the PACS that sends to it.
NODE_AE = "ICHNET"
PACS_AE = "PACS"

NodeFactory = Callable[..., NodeProcess]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the item, so fixtures can tell whether the test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


def failed_so_far(request: pytest.FixtureRequest) -> bool:
    """Whether the requesting test failed in setup or call (for fixtures that print logs)."""
    return any(
        getattr(request.node, f"report_{when}", None) is not None
        and getattr(request.node, f"report_{when}").failed
        for when in ("setup", "call")
    )


@pytest.fixture
def node_factory(
    tmp_path: Path, request: pytest.FixtureRequest, engine_cache_dir: Path
) -> Iterator[NodeFactory]:
    """Make (not start) ``ichnet-node serve`` subprocesses; all are stopped at teardown and
    their logs printed if the test failed.

    Call it as ``node_factory(peers=[...], complete_after_s=..., **sections)`` (further config
    sections, e.g. ``engine="triton"``); the node gets a free port,
    storage under ``tmp_path/storage`` and the AE title :data:`NODE_AE`.
    """
    nodes: list[NodeProcess] = []

    def factory(
        *, peers: list[dict[str, object]], complete_after_s: float, **sections: Any
    ) -> NodeProcess:
        [port] = reserve_ports(1)
        index = len(nodes)
        storage_dir = tmp_path / "storage"
        config = write_node_config(
            tmp_path / f"node-{index}.yaml",
            port=port,
            storage_dir=storage_dir,
            peers=peers,
            complete_after_s=complete_after_s,
            engine_cache_dir=engine_cache_dir,
            ae_title=NODE_AE,
            sections=sections,
        )
        node = NodeProcess(config, tmp_path / f"node-{index}.log", port, NODE_AE, storage_dir)
        nodes.append(node)
        return node

    yield factory
    for node in nodes:
        node.stop()
    if failed_so_far(request):
        for node in nodes:
            print(f"\n===== log of {node.config_path.name} =====\n{node.log()}")
