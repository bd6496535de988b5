"""Log and audit output for machines: JSON log lines, and the audit trail as RFC 5424 syslog.

A hospital collects logs centrally (a SIEM, Elasticsearch, journald); prose lines have to be
parsed with fragile patterns there, so ``logging.format: json`` writes each log record as one
JSON object. The audit trail stays in ``audit/audit.jsonl`` (DESIGN.md) and can in addition be
sent to a syslog collector (``logging.audit_syslog``), the usual way an ATNA audit repository or
a SIEM receives security events. Both use the standard library only (``logging``,
``logging.handlers.SysLogHandler``): the formats are a few lines each, and a dependency would
add nothing the standard library lacks.

Syslog messages follow RFC 5424 (``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - MSG``) over
UDP (RFC 5426): MSGID is the audit event (``instance_refused``), MSG the same JSON object as the
audit file's line. UDP is fire-and-forget, so a collector that is down never stalls the node;
the file stays the complete record. TLS syslog (RFC 5425) is left to a local relay (rsyslog,
syslog-ng) that the node sends to on loopback.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import socket
from datetime import datetime, timezone
from typing import Final

#: RFC 5424 version field.
SYSLOG_VERSION: Final[int] = 1
#: RFC 5424 limits: APP-NAME 48, MSGID 32 printable US-ASCII characters.
_APP_NAME_MAX: Final[int] = 48
_MSGID_MAX: Final[int] = 32
#: RFC 5424 NILVALUE.
NIL: Final[str] = "-"
#: Audit events that record a refusal or failure are sent as warnings, the rest as notices.
_WARNING_WORDS: Final[tuple[str, ...]] = ("refused", "rejected", "failed")


class JsonFormatter(logging.Formatter):
    """One JSON object per log record: ``time`` (ISO 8601 UTC), ``level``, ``logger``,
    ``message``, ``thread``, and ``exception`` (the traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "thread": record.threadName,
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def _printable(text: str, limit: int) -> str:
    """RFC 5424 header fields are printable US-ASCII without spaces; anything else becomes '_'."""
    cleaned = "".join(c if 33 <= ord(c) <= 126 else "_" for c in text)[:limit]
    return cleaned or NIL


class Rfc5424Formatter(logging.Formatter):
    """Everything of an RFC 5424 message after ``<PRI>`` (which SysLogHandler prepends).

    The record's message is the audit line (JSON); ``record.msgid`` (the audit event) becomes
    MSGID. TIMESTAMP is the record's time in UTC, HOSTNAME this machine's name.
    """

    def __init__(self, app_name: str) -> None:
        super().__init__()
        self.app_name = _printable(app_name, _APP_NAME_MAX)
        self.hostname = _printable(socket.gethostname(), 255)

    def format(self, record: logging.LogRecord) -> str:
        timestamp = datetime.fromtimestamp(record.created, timezone.utc).isoformat(
            timespec="milliseconds"
        )
        msgid = _printable(str(getattr(record, "msgid", NIL)), _MSGID_MAX)
        header = (
            f"{SYSLOG_VERSION} {timestamp.replace('+00:00', 'Z')} {self.hostname} "
            f"{self.app_name} {os.getpid()} {msgid} {NIL}"
        )
        return f"{header} {record.getMessage()}"


def audit_syslog_logger(host: str, port: int, facility: str, app_name: str) -> logging.Logger:
    """A logger that sends each record as an RFC 5424 message over UDP to ``host:port``.

    The logger does not propagate: audit lines go to the collector, not into the node's log.
    """
    handler = logging.handlers.SysLogHandler(
        address=(host, port),
        facility=logging.handlers.SysLogHandler.facility_names[facility],
        socktype=socket.SOCK_DGRAM,
    )
    handler.append_nul = False  # RFC 5424 has no trailing NUL (an RFC 3164 habit)
    handler.setFormatter(Rfc5424Formatter(app_name))
    logger = logging.getLogger(f"ichnet.audit.syslog.{host}:{port}")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


def audit_severity(event: str) -> int:
    """Syslog severity of an audit event: WARNING for refusals and failures, else INFO."""
    return logging.WARNING if any(word in event for word in _WARNING_WORDS) else logging.INFO
