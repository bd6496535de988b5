"""A real Orthanc PACS on loopback for the integration tests (Debian package ``orthanc``)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ORTHANC_BINARY = "Orthanc"
STARTUP_TIMEOUT_S = 30.0


@dataclass
class Orthanc:
    """A running Orthanc: its DICOM identity and a tiny REST client (urllib, no extra dependency)."""

    process: subprocess.Popen[bytes]
    ae_title: str
    dicom_port: int
    http_port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def request(
        self, method: str, path: str, body: bytes | dict[str, Any] | list[Any] | None = None
    ) -> Any:
        """Call the REST API; JSON bodies are encoded, JSON answers decoded."""
        data = json.dumps(body).encode() if isinstance(body, dict | list) else body
        req = urllib.request.Request(self.url + path, data=data, method=method)
        with urllib.request.urlopen(req, timeout=120) as resp:
            payload = resp.read()
        ctype = resp.headers.get("Content-Type", "")
        return json.loads(payload) if "json" in ctype else payload

    def upload(self, path: Path) -> dict[str, Any]:
        """POST one DICOM file to /instances."""
        return self.request("POST", "/instances", path.read_bytes())

    def store_to_modality(self, modality: str, resources: list[str]) -> Any:
        """Ask Orthanc to C-STORE resources (study/series/instance IDs) to a configured modality."""
        return self.request(
            "POST", f"/modalities/{modality}/store", {"Resources": resources, "Synchronous": True}
        )

    def series_of_study(self, study_id: str) -> list[dict[str, Any]]:
        """The series of an Orthanc study (``/studies/{id}/series``), with their main tags."""
        series: list[dict[str, Any]] = self.request("GET", f"/studies/{study_id}/series")
        return series

    def instance_file(self, instance_id: str) -> bytes:
        """The stored DICOM file of an Orthanc instance, byte for byte."""
        data: bytes = self.request("GET", f"/instances/{instance_id}/file")
        return data

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def orthanc_available() -> bool:
    return shutil.which(ORTHANC_BINARY) is not None


def start_orthanc(
    workdir: Path,
    *,
    ae_title: str,
    dicom_port: int,
    http_port: int,
    modalities: dict[str, list[Any]],
) -> Orthanc:
    """Start Orthanc with its own storage under ``workdir``; waits until its REST API answers."""
    storage = workdir / "orthanc-db"
    storage.mkdir(parents=True, exist_ok=True)
    config = {
        "Name": "ichnet-test-pacs",
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "Plugins": [],
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomServerEnabled": True,
        "DicomAet": ae_title,
        "DicomPort": dicom_port,
        "DicomCheckCalledAet": True,
        "DicomAlwaysAllowStore": True,
        "DicomModalities": modalities,
        "StableAge": 1,
    }
    config_path = workdir / "orthanc.json"
    config_path.write_text(json.dumps(config, indent=2))
    log_path = workdir / "orthanc.log"
    with log_path.open("wb") as log:  # the child keeps its own descriptor
        process = subprocess.Popen(
            [ORTHANC_BINARY, str(config_path)], stdout=log, stderr=subprocess.STDOUT
        )
    orthanc = Orthanc(process, ae_title, dicom_port, http_port, log_path)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Orthanc exited at start:\n{log_path.read_text(errors='replace')}")
        try:
            orthanc.request("GET", "/system")
            return orthanc
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.2)
    orthanc.stop()
    raise RuntimeError(f"Orthanc did not answer within {STARTUP_TIMEOUT_S} s")
