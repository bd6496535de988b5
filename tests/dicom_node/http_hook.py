"""A real HTTP endpoint on loopback (``http.server``) that records what is posted to it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    """One POST: when, its Content-Type and body."""

    at: float
    content_type: str
    body: bytes


@dataclass
class HookServer:
    """The running endpoint; ``statuses`` are answered in turn (the last one repeats)."""

    server: ThreadingHTTPServer
    statuses: list[int]
    received: list[Received] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/ich"

    def wait_for(self, count: int, timeout_s: float) -> list[Received]:
        deadline = time.monotonic() + timeout_s
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return list(self.received)


@contextmanager
def hook_server(statuses: list[int] | None = None) -> Iterator[HookServer]:
    """Serve on a free port until the block ends."""
    hook: HookServer

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            index = min(len(hook.received), len(hook.statuses) - 1)
            hook.received.append(
                Received(time.monotonic(), self.headers.get("Content-Type", ""), body)
            )
            self.send_response(hook.statuses[index])
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hook = HookServer(server, statuses or [200])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()
