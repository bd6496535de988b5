"""``ichnet-node serve`` as a real subprocess, and a dcmtk ``storescp`` peer for its results.

The end-to-end tests drive the node the way an administrator runs it: a YAML file, the console
script, signals. Everything the node says goes to a log file that the tests read (to learn when
it is ready or which job state it reached) and print when a test fails.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pydicom
import pytest
import yaml

from dicom_node.layout import StorageLayout
from tests.dicom_node.dcmtk import echoscu, require_tool

#: The node imports torch and prepares its engine before it listens; the first start of a
#: session exports and probes the engines (tens of seconds on a busy 2-core CPU).
NODE_STARTUP_TIMEOUT_S: Final[float] = 300.0
#: A graceful stop lets the running job finish; beyond this the test kills the node.
NODE_STOP_TIMEOUT_S: Final[float] = 60.0
#: storescp starts in milliseconds; this bounds a broken installation.
STORESCP_STARTUP_TIMEOUT_S: Final[float] = 15.0
POLL_INTERVAL_S: Final[float] = 0.05
#: What the node logs once its SCP is bound and its threads run (dicom_node/service.py).
_READY = re.compile(r"node \S+ listening on ")


def reserve_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on 127.0.0.1 (all held open together while chosen)."""
    with ExitStack() as stack:
        sockets = [
            stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            for _ in range(count)
        ]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]


def wait_until(condition: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """Poll ``condition`` until it returns something truthy; fail the test naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(POLL_INTERVAL_S)


def node_command() -> list[str]:
    """The installed console script next to this interpreter, else ``python -m dicom_node.cli``."""
    script = Path(sys.executable).with_name("ichnet-node")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "dicom_node.cli"]


def write_node_config(
    path: Path,
    *,
    port: int,
    storage_dir: Path,
    peers: list[dict[str, Any]],
    complete_after_s: float,
    engine_cache_dir: Path,
    ae_title: str = "ICHNET",
    sections: dict[str, Any] | None = None,
) -> Path:
    """A node config for loopback tests: short series quiet period, fast sender retries.

    The engine is the default (``auto``) unless ``sections`` (merged in) say otherwise;
    ``engine_cache_dir`` is shared between the nodes of a
    test session, as one installation keeps it across restarts, so the engines are prepared
    (exported, probed) once rather than by every test.
    """
    config = {
        "node": {
            "ae_title": ae_title,
            "bind": "127.0.0.1",
            "port": port,
            "storage_dir": str(storage_dir),
        },
        "peers": peers,
        "series": {"complete_after_s": complete_after_s, "poll_interval_s": 0.1},
        "model": {"cache_dir": str(engine_cache_dir)},
        "sender": {"max_attempts": 3, "initial_backoff_s": 0.5, "max_backoff_s": 2},
        "logging": {"level": "INFO"},
    }
    for name, value in (sections or {}).items():  # e.g. engine: triton, triton: {...}
        current = config.get(name)
        config[name] = {**current, **value} if isinstance(current, dict) else value
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def read_jobs(storage_dir: Path) -> list[dict[str, Any]]:
    """Every row of the node's job queue, read through a read-only SQLite connection.

    The test only observes: it must not take the write lock the running node needs, nor
    change the file it will recover from after a crash.
    """
    database = StorageLayout(storage_dir).jobs_db
    if not database.exists():
        return []
    with contextlib.closing(
        sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True, timeout=10)
    ) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute("SELECT * FROM jobs ORDER BY id")]


@dataclass
class NodeProcess:
    """One ``ichnet-node serve`` subprocess; ``log_path`` collects its output over restarts."""

    config_path: Path
    log_path: Path
    port: int
    ae_title: str
    storage_dir: Path
    process: subprocess.Popen[bytes] | None = None
    _log_file: Any = field(default=None, repr=False)

    def start(self) -> NodeProcess:
        """Start (or restart) the node and wait until it listens; its log is appended to."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("the node is already running")
        self._log_file = self.log_path.open("ab")
        self._log_file.write(f"==== start {' '.join(node_command())} ====\n".encode())
        self._log_file.flush()
        offset = self.log_path.stat().st_size
        self.process = subprocess.Popen(
            [*node_command(), "serve", "--config", str(self.config_path)],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.wait_for_log(_READY, NODE_STARTUP_TIMEOUT_S, since=offset)
        return self

    def log(self, since: int = 0) -> str:
        """The node's output so far (from byte ``since``); empty before its first start."""
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as f:
            f.seek(since)
            return f.read().decode(errors="replace")

    def jobs(self) -> list[dict[str, Any]]:
        """The job queue as the node left it on disk (read-only)."""
        return read_jobs(self.storage_dir)

    def log_size(self) -> int:
        """Current length of the log, to wait for lines written after this moment."""
        return self.log_path.stat().st_size

    def wait_for_log(
        self, pattern: re.Pattern[str] | str, timeout_s: float, *, since: int = 0
    ) -> re.Match[str]:
        """Wait for a log line matching ``pattern``; fails at once if the node exits."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern

        def found() -> re.Match[str] | None:
            if self.process is not None and self.process.poll() is not None:
                pytest.fail(
                    f"node exited with {self.process.returncode} while waiting for "
                    f"{regex.pattern!r}\n{self.log()}"
                )
            return regex.search(self.log(since))

        match: re.Match[str] = wait_until(found, timeout_s, f"node log line {regex.pattern!r}")
        return match

    def kill(self) -> None:
        """SIGKILL: the crash the node must survive (no handler, no cleanup)."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        self._close_log()

    def stop(self) -> int:
        """SIGTERM and wait (the node's graceful stop); kills it if it does not exit in time."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(NODE_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._close_log()
        return int(self.process.returncode)

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


@dataclass
class StoreScp:
    """dcmtk ``storescp`` receiving the node's results; ``+uf`` keeps every received copy."""

    process: subprocess.Popen[bytes]
    ae_title: str
    port: int
    output_dir: Path
    log_path: Path

    def received(self) -> list[pydicom.Dataset]:
        """Every object received so far (a resent object appears once per C-STORE)."""
        return [
            pydicom.dcmread(p, stop_before_pixels=True)
            for p in sorted(self.output_dir.iterdir())
            if p.is_file()
        ]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextmanager
def running_storescp(
    work_dir: Path, ae_title: str, port: int, caller_ae: str, *options: str
) -> Iterator[StoreScp]:
    """Run storescp on 127.0.0.1:``port`` until the block ends; ready when it answers C-ECHO.

    ``options`` are further storescp options (e.g. ``--sleep-during 1``, a slow PACS).
    """
    output_dir = work_dir / "storescp-received"
    output_dir.mkdir(parents=True)
    log_path = work_dir / "storescp.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                require_tool("storescp"),
                "-v",
                "+uf",  # unique file names: a duplicate C-STORE shows as a second file
                *options,
                "-aet",
                ae_title,
                "-od",
                str(output_dir),
                str(port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TCP_NODELAY": "1"},
        )
    peer = StoreScp(process, ae_title, port, output_dir, log_path)
    try:
        wait_until(
            lambda: echoscu(port, caller_ae, ae_title).returncode == 0,
            STORESCP_STARTUP_TIMEOUT_S,
            "storescp to answer C-ECHO",
        )
        yield peer
    finally:
        peer.stop()
