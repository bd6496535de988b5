"""Memory of the SCP when a peer announces a 512 MiB PDU: pynetdicom's own server vs the node's.

    .venv/bin/python bench/oversize_pdu.py [--mib 512]

For each server a fresh subprocess listens on loopback: ``plain`` is the node's AE (contexts,
AE checks, ``maximum_pdu_size`` 0 as main had it) served by pynetdicom's ``start_server``;
``guarded`` is ``dicom_node.app.start`` with the default ``limits``. The client connects, sends
the 6-byte header of an A-ASSOCIATE-RQ announcing ``--mib`` MiB (no AE title at all) and then
streams that many bytes of zeros until the server closes the connection. Printed: the server's
resident set (VmRSS) and peak (VmHWM) from /proc/<pid>/status before and after, and how much the
client got out.
"""

from __future__ import annotations

import argparse
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

MIB: Final[int] = 1024 * 1024
ROOT: Final[Path] = Path(__file__).resolve().parents[1]


def _serve(kind: str, port: int, storage_dir: str) -> None:
    sys.path.insert(0, str(ROOT))
    from dicom_node import app
    from dicom_node.config import parse_config
    from dicom_node.storage import InstanceStore

    config = parse_config(
        {
            "node": {"port": port, "storage_dir": storage_dir},
            "peers": [{"ae_title": "PACS", "host": "127.0.0.1", "port": 4242}],
        }
    )
    store = InstanceStore(storage_dir)
    if kind == "plain":
        ae = app.build_ae(config)
        ae.maximum_pdu_size = 0
        ae.start_server(("127.0.0.1", port), block=False)
    else:
        app.start(config, store, lambda _instance: None)
    print("ready", flush=True)
    time.sleep(3600)


def _memory(pid: int) -> tuple[float, float]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        values[key] = int(rest.split()[0]) / 1024 if key in ("VmRSS", "VmHWM") else None
    return float(values["VmRSS"] or 0), float(values["VmHWM"] or 0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measure(kind: str, mib: int) -> str:
    port = _free_port()
    with tempfile.TemporaryDirectory() as storage:
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", kind, "--port", str(port), "--storage", storage],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None and server.stdout.readline().strip() == "ready"
            rss0, hwm0 = _memory(server.pid)
            started = time.monotonic()
            sent = 0
            with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
                sock.sendall(struct.pack(">BBL", 0x01, 0, mib * MIB))
                block = bytes(MIB)
                try:
                    while sent < mib * MIB:
                        sock.sendall(block)
                        sent += MIB
                except OSError:
                    pass
                time.sleep(1.0)  # let the server decode / give up
            rss1, hwm1 = _memory(server.pid)
            elapsed = time.monotonic() - started
        finally:
            server.terminate()
            server.wait(10)
    return (
        f"{kind:8s} RSS {rss0:6.0f} -> {rss1:6.0f} MiB   peak {hwm0:6.0f} -> {hwm1:6.0f} MiB   "
        f"client sent {sent / MIB:4.0f} of {mib} MiB in {elapsed:4.1f} s"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=512, help="announced PDU length in MiB")
    parser.add_argument("--serve", choices=("plain", "guarded"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--storage", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        _serve(args.serve, args.port, args.storage)
        return 0
    print(f"A-ASSOCIATE-RQ header announcing {args.mib} MiB, then {args.mib} MiB of zeros:")
    for kind in ("plain", "guarded"):
        print(measure(kind, args.mib), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
