"""A read-only status page for the admin, on the metrics port: ``/status``.

What an admin checks first when a radiologist asks "where is my result?": the recent jobs with
their state, result version (as ``ichnet-node jobs list``) and reason, the last results with an overlay thumbnail, where results go (peers)
and whether the disk is filling up. Read-only by design: the page has no forms and accepts only
GET; operators act through ``ichnet-node jobs``.

No patient names: the page is built from the job queue and result.json, which hold UIDs,
AE titles and numbers only, and the thumbnails are pixels of one slice with the overlay (no
burned-in text). Every value is HTML-escaped.
"""

from __future__ import annotations

import datetime
import html
import json
import re
import shutil
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

import numpy as np
from PIL import Image

from dicom_node.config import Peer
from dicom_node.jobs import Job, JobState, JobStore
from dicom_node.layout import StorageLayout
from dicom_node.results.sc import BRAIN_WINDOW_HU, OVERLAY_ALPHA, key_slices, overlay_colours
from ichnet_core.imaging.volume import Volume
from ichnet_core.prediction import Prediction

STATUS_PATH: Final[str] = "/status"
THUMBNAIL_NAME: Final[str] = "thumbnail.png"
#: Longest side of a thumbnail in pixels.
THUMBNAIL_SIZE: Final[int] = 160
#: Jobs listed, newest first, and results shown with thumbnails.
JOBS_SHOWN: Final[int] = 50
RESULTS_SHOWN: Final[int] = 8
_THUMBNAIL_PATH = re.compile(rf"^{STATUS_PATH}/thumbnail/(\d+)\.png$")
_STYLE: Final[str] = (
    "body{font-family:sans-serif;margin:1.5em;color:#222}"
    "table{border-collapse:collapse;margin-bottom:1.5em}"
    "td,th{border:1px solid #bbb;padding:3px 8px;text-align:left;font-size:13px}"
    ".FAILED{background:#f6d0d0}.SKIPPED{background:#eee}.DONE{background:#d8f0d8}"
    ".banner{background:#780000;color:#fff;padding:6px 10px;font-weight:bold}"
    ".result{display:inline-block;margin:0 12px 12px 0;font-size:13px}"
)


def render_thumbnail(volume: Volume, prediction: Prediction) -> Image.Image:
    """The slice with most blood (or the representative slice) in a brain window with the
    overlay in the SEG's colours, small (:mod:`dicom_node.publish` stores it as a PNG)."""
    index = key_slices(prediction, maximum=1)[0]
    centre, width = BRAIN_WINDOW_HU
    grey = np.clip((volume.hu[index] - (centre - width / 2)) / width, 0.0, 1.0) * 255.0
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    colours = overlay_colours(prediction, index)
    painted = colours.any(axis=-1)
    rgb[painted] = (1 - OVERLAY_ALPHA) * rgb[painted] + OVERLAY_ALPHA * colours[painted]
    image = Image.fromarray(np.round(rgb).astype(np.uint8), mode="RGB")
    image.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
    return image


def _when(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S UTC"
    )


def _table(
    headers: Sequence[str], rows: Iterable[Sequence[object]], classes: Sequence[str] = ()
) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for index, row in enumerate(rows):
        css = f' class="{html.escape(classes[index])}"' if index < len(classes) else ""
        cells = "".join(f"<td>{html.escape(str(c))}</td>" for c in row)
        body.append(f"<tr{css}>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


class StatusPage:
    """The WSGI part of the metrics endpoint that serves ``/status`` (see the module docstring).

    Parameters
    ----------
    jobs, layout, peers, ae_title:
        What the page shows: the node's job queue, its storage layout, ``peers`` and AE title.
    """

    def __init__(
        self, jobs: JobStore, layout: StorageLayout, peers: Sequence[Peer], ae_title: str
    ) -> None:
        self.jobs = jobs
        self.layout = layout
        self.peers = tuple(peers)
        self.ae_title = ae_title

    def handles(self, path: str) -> bool:
        """Whether ``path`` is one of the page's paths."""
        return path == STATUS_PATH or _THUMBNAIL_PATH.match(path) is not None

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Allow", "GET, HEAD")])
            return [b"read-only\n"]
        path = environ.get("PATH_INFO", "")
        match = _THUMBNAIL_PATH.match(path)
        if match is not None:
            thumbnail = self.layout.result_dir(int(match[1])) / THUMBNAIL_NAME
            if not thumbnail.is_file():
                start_response("404 Not Found", [("Content-Type", "text/plain")])
                return [b"no thumbnail\n"]
            start_response("200 OK", [("Content-Type", "image/png")])
            return [thumbnail.read_bytes()]
        body = self.render().encode("utf-8")
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
        return [body]

    def _result(self, job: Job) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = json.loads(
                (self.layout.result_dir(job.id) / "result.json").read_text(encoding="utf-8")
            )
        except (OSError, ValueError):
            return None
        return result

    def render(self) -> str:
        """The page's HTML."""
        jobs = list(reversed(self.jobs.list_jobs()))[:JOBS_SHOWN]
        usage = shutil.disk_usage(self.layout.root)
        job_rows = [
            (
                job.id,
                job.state.value,
                job.series_instance_uid,
                job.calling_ae,
                "-" if job.result_version is None else job.result_version,
                job.instance_count,
                _when(job.updated_at),
                job.reason or "",
            )
            for job in jobs
        ]
        results: list[str] = []
        for job in jobs:
            if job.state not in (JobState.DONE, JobState.SENDING) or len(results) >= RESULTS_SHOWN:
                continue
            result = self._result(job)
            if result is None:
                continue
            present = result.get("present", {})
            found = [k for k, v in present.items() if v and k != "any"]
            text = (
                f"job {job.id} (version {result.get('result_version', '-')}): ICH {'present' if present.get('any') else 'absent'} "
                f"(p={result['subject']['any']:.2f}), {result['hemorrhage_volume_ml']:.1f} mL"
                + (f" [{', '.join(found)}]" if found else "")
            )
            results.append(
                f'<div class="result"><img src="{STATUS_PATH}/thumbnail/{job.id}.png" '
                f'alt="overlay of job {job.id}" width="{THUMBNAIL_SIZE}"><br>'
                f"{html.escape(text)}</div>"
            )
        peers = [
            (p.ae_title, p.host, p.port, ", ".join(p.outputs), "yes" if p.tls else "no")
            for p in self.peers
        ]
        return (
            "<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<title>ICHNet node {html.escape(self.ae_title)}</title><style>{_STYLE}</style>"
            "</head><body>"
            '<div class="banner">ICHNet research software - not for diagnostic use</div>'
            f"<h1>Node {html.escape(self.ae_title)}</h1>"
            f"<p>Read-only status, {_when(datetime.datetime.now().timestamp())}. Free disk: "
            f"{usage.free / 1e9:.1f} GB of {usage.total / 1e9:.1f} GB.</p>"
            f"<h2>Last results</h2>{''.join(results) or '<p>none yet</p>'}"
            f"<h2>Jobs (newest first)</h2>"
            + _table(
                ("job", "state", "series", "from", "version", "instances", "updated", "reason"),
                job_rows,
                [job.state.value for job in jobs],
            )
            + "<h2>Peers</h2>"
            + _table(("AE title", "host", "port", "outputs", "TLS"), peers)
            + "</body></html>"
        )
