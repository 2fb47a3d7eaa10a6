"""One verdict of the diagnosis, and the few ways every check words its evidence.

Evidence is built only from what was recorded: provider error codes and descriptions (already
redacted when they were stored), scopes, times, counts. Facts never hold a token or a secret;
even so, no field named like one is ever copied into evidence (see `_clean`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

Status = Literal["ok", "warning", "failing"]
SEVERITY: dict[str, int] = {"ok": 0, "warning": 1, "failing": 2}

_SECRET_KEY = re.compile(
    r"secret|password|verifier|assertion|^(code|token|access_token|refresh_token|id_token)$"
    r"|_(access|refresh|id)_token$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    summary: str
    evidence: dict[str, Any]
    remedy: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "summary": self.summary,
            "evidence": self.evidence,
            "remedy": self.remedy,
        }


def worst(checks: Sequence[Check]) -> Status:
    """The most severe status among the checks ("ok" when there are none)."""
    result: Status = "ok"
    for check in checks:
        if SEVERITY[check.status] > SEVERITY[result]:
            result = check.status
    return result


def check(
    name: str, status: Status, summary: str, evidence: dict[str, Any], remedy: str | None = None
) -> Check:
    """A verdict whose evidence is JSON-ready and free of anything named like a secret."""
    return Check(name, status, summary, _clean(evidence), remedy)


def _clean(value: Any) -> Any:
    """Evidence as JSON-ready values, without any field named like a token or a secret (a
    boolean such as `client_secret_set` says nothing secret and stays). Facts that know how to
    show themselves (`as_evidence`) are shown that way."""
    if hasattr(value, "as_evidence"):
        return _clean(value.as_evidence())
    if isinstance(value, Mapping):
        return {
            str(k): _clean(v)
            for k, v in value.items()
            if not (_SECRET_KEY.search(str(k)) and not isinstance(v, bool | None))
        }
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, datetime):
        return iso(value)
    return value


def iso(moment: datetime | None) -> str | None:
    """A time as evidence and summaries show it: `2025-03-01T12:00:00Z`."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def join(items: Sequence[str]) -> str:
    return ", ".join(items) if items else "(none)"
