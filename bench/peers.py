"""Real DICOM peers for the network benchmarks, all on 127.0.0.1.

* dcmtk ``storescu`` (the sender), ``storescp`` (the reference receiver) and ``echoscu``, run
  with ``TCP_NODELAY=1`` (without it dcmtk waits ~40 ms on Nagle's algorithm per PDU);
* the node as a real ``ichnet-node serve`` subprocess with a generated config;
* a pynetdicom C-STORE SCP that records when each SEG/SR arrives (the PACS the results go to).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from tests.dicom_node.dcmtk import dcmtk_tool

LOCALHOST: Final[str] = "127.0.0.1"
SENDER_AE: Final[str] = "BENCHPACS"
NODE_AE: Final[str] = "ICHNET"
STORESCP_AE: Final[str] = "STORESCP"
DCMTK_ENV: Final[dict[str, str]] = {**os.environ, "TCP_NODELAY": "1"}
NODE_START_TIMEOUT_S: Final[float] = 180.0
_POLL_S: Final[float] = 0.05
REPO_ROOT: Final[Path] = Path(__file__).resolve().parents[1]
NODE_EXE: Final[Path] = Path(sys.executable).parent / "ichnet-node"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOCALHOST, 0))
        return int(s.getsockname()[1])


def _dcmtk(name: str) -> str:
    """dcmtk's ``name`` (not pynetdicom's console script of that name in an activated venv)."""
    path = dcmtk_tool(name)
    if path is None:
        raise SystemExit(f"dcmtk tool {name!r} missing (apt-get install dcmtk)")
    return path


def require_dcmtk() -> None:
    missing = [tool for tool in ("storescu", "storescp", "echoscu") if dcmtk_tool(tool) is None]
    if missing:
        raise SystemExit(f"dcmtk tools missing: {missing} (apt-get install dcmtk)")


def echo(port: int, called_ae: str, calling_ae: str = SENDER_AE) -> bool:
    result = subprocess.run(
        [_dcmtk("echoscu"), "-aet", calling_ae, "-aec", called_ae, LOCALHOST, str(port)],
        env=DCMTK_ENV,
        capture_output=True,
        check=False,
    )
    return result.returncode == 0


def wait_for_echo(
    port: int,
    called_ae: str,
    timeout_s: float,
    process: subprocess.Popen[Any],
    calling_ae: str = SENDER_AE,
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{called_ae} exited with {process.returncode} before answering")
        if echo(port, called_ae, calling_ae):
            return
        time.sleep(0.2)
    raise TimeoutError(f"{called_ae} did not answer C-ECHO on port {port} within {timeout_s} s")


def storescu(port: int, called_ae: str, files: Sequence[Path]) -> float:
    """Send ``files`` over one association; returns the wall time of the storescu process."""
    started = time.perf_counter()
    result = subprocess.run(
        [
            _dcmtk("storescu"),
            "-aet",
            SENDER_AE,
            "-aec",
            called_ae,
            LOCALHOST,
            str(port),
            *map(str, files),
        ],
        env=DCMTK_ENV,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"storescu to {called_ae} failed: {result.stderr[-2000:]}")
    return elapsed


@contextmanager
def storescp(out_dir: Path) -> Iterator[int]:
    """dcmtk storescp accepting every transfer syntax, writing into ``out_dir``."""
    port = free_port()
    out_dir.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [_dcmtk("storescp"), "+xa", "-aet", STORESCP_AE, "-od", str(out_dir), str(port)],
        env=DCMTK_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_echo(port, STORESCP_AE, 30.0, process)
        yield port
    finally:
        process.terminate()
        process.wait(10)


@dataclass
class RunningNode:
    process: subprocess.Popen[Any]
    port: int
    storage_dir: Path
    log_path: Path


def write_node_config(
    path: Path,
    storage_dir: Path,
    port: int,
    *,
    result_port: int | None,
    engine: str = "torch",
    complete_after_s: float = 5.0,
    cache_dir: Path | None = None,
    peer_ae: str = SENDER_AE,
    outputs: Sequence[str] | None = None,
    notifications: Sequence[dict[str, Any]] = (),
    more_peer_aes: Sequence[str] = (),
) -> None:
    """A loopback node config: ``peer_ae`` and every AE title in ``more_peer_aes`` may send and
    get their results at ``result_port`` (``outputs`` for all of them)."""
    peers: list[dict[str, Any]] = []
    port_for_results = result_port or free_port()
    for title in (peer_ae, *more_peer_aes):
        peer: dict[str, Any] = {"ae_title": title, "host": LOCALHOST, "port": port_for_results}
        if outputs is not None:
            peer["outputs"] = list(outputs)
        peers.append(peer)
    config = {
        "node": {
            "ae_title": NODE_AE,
            "bind": LOCALHOST,
            "port": port,
            "storage_dir": str(storage_dir),
        },
        "peers": peers,
        "series": {"complete_after_s": complete_after_s, "poll_interval_s": 0.1},
        "engine": engine,
        "model": {"cache_dir": str(cache_dir)} if cache_dir else {},
        "logging": {"level": "INFO"},
    }
    if notifications:
        config["notifications"] = list(notifications)
    path.write_text(yaml.safe_dump(config), encoding="utf-8")


@contextmanager
def node_serve(
    work_dir: Path,
    *,
    result_port: int | None = None,
    engine: str = "torch",
    complete_after_s: float = 5.0,
    cache_dir: Path | None = None,
    peer_ae: str = SENDER_AE,
    outputs: Sequence[str] | None = None,
    notifications: Sequence[dict[str, Any]] = (),
    more_peer_aes: Sequence[str] = (),
) -> Iterator[RunningNode]:
    """``ichnet-node serve`` as a subprocess; stopped with SIGTERM (graceful) at the end."""
    port = free_port()
    storage_dir = work_dir / "node-storage"
    config_path = work_dir / "node.yaml"
    write_node_config(
        config_path,
        storage_dir,
        port,
        result_port=result_port,
        engine=engine,
        complete_after_s=complete_after_s,
        cache_dir=cache_dir,
        peer_ae=peer_ae,
        outputs=outputs,
        notifications=notifications,
        more_peer_aes=more_peer_aes,
    )
    log_path = work_dir / "node.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(NODE_EXE), "serve", "--config", str(config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
        )
    try:
        wait_for_echo(port, NODE_AE, NODE_START_TIMEOUT_S, process, peer_ae)
        yield RunningNode(process, port, storage_dir, log_path)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident set size (VmHWM) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmHWM for pid {pid}")


@dataclass
class ResultReceiver:
    """A pynetdicom SCP (the PACS results go back to) recording each arrival's time."""

    port: int
    arrivals: list[tuple[float, str]] = field(default_factory=list)
    _event: threading.Event = field(default_factory=threading.Event)
    _server: Any = None

    def wait_for(self, count: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while len(self.arrivals) < count and time.monotonic() < deadline:
            self._event.wait(_POLL_S)
            self._event.clear()
        return len(self.arrivals) >= count


@contextmanager
def result_receiver() -> Iterator[ResultReceiver]:
    from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
    from pynetdicom.sop_class import (  # type: ignore[attr-defined]
        Comprehensive3DSRStorage,
        SegmentationStorage,
    )

    port = free_port()
    receiver = ResultReceiver(port)

    def on_store(event: Any) -> int:
        receiver.arrivals.append((time.perf_counter(), str(event.request.AffectedSOPClassUID)))
        receiver._event.set()
        return 0x0000

    ae = AE(ae_title=SENDER_AE)
    for sop_class in (SegmentationStorage, Comprehensive3DSRStorage):
        ae.add_supported_context(sop_class, ALL_TRANSFER_SYNTAXES)
    receiver._server = ae.start_server(
        (LOCALHOST, port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    try:
        yield receiver
    finally:
        receiver._server.shutdown()
