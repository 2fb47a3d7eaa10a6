"""How the CLI shows things to a person: aligned tables, `key: value` blocks, short times.

Scripts get `--json` instead; nothing here is parsed back.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO


def text(value: Any) -> str:
    """One cell: `-` for nothing, lists joined by spaces, dicts as k=v, booleans as yes/no."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return " ".join(text(v) for v in value) if value else "-"
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items()) if value else "-"
    return str(value)


def when(value: Any) -> str:
    """An RFC 3339 time as `YYYY-MM-DD HH:MM:SS` in UTC, or `-`."""
    if not value:
        return "-"
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def clip(value: str, width: int | None) -> str:
    if width is None or len(value) <= width:
        return value
    return value[: max(width - 1, 1)] + "…"


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    widths: dict[str, int] | None = None,
    empty: str = "(none)",
) -> str:
    """Columns aligned on the widest cell; `widths` caps a column (the rest is clipped)."""
    caps = widths or {}
    cells = [
        [clip(text(c), caps.get(h)) for h, c in zip(headers, row, strict=True)] for row in rows
    ]
    if not cells:
        return empty
    sizes = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(sizes[i]) for i, h in enumerate(headers)).rstrip()]
    lines += ["  ".join(c.ljust(sizes[i]) for i, c in enumerate(r)).rstrip() for r in cells]
    return "\n".join(lines)


def details(pairs: Iterable[tuple[str, Any]]) -> str:
    """`label: value` lines, labels aligned."""
    items = [(label, text(value)) for label, value in pairs]
    size = max((len(label) for label, _ in items), default=0)
    return "\n".join(f"{(label + ':').ljust(size + 1)} {value}" for label, value in items)


def emit(value: Any, stream: TextIO | None = None) -> None:
    """Print `value` as JSON for scripts (one document, indented)."""
    print(json.dumps(value, indent=2, sort_keys=False), file=stream or sys.stdout, flush=True)


def emit_line(value: Any, stream: TextIO | None = None) -> None:
    """Print `value` as one line of JSON (for streams: one event a line)."""
    print(json.dumps(value, separators=(",", ":")), file=stream or sys.stdout, flush=True)


def note(message: str) -> None:
    """Something for the person at the terminal, kept out of stdout (which may be piped)."""
    print(message, file=sys.stderr, flush=True)


def print_diagnosis(subject: str, diagnosis: dict[str, Any]) -> None:
    """A diagnosis (of an app or a connection): its summary, then each check; the evidence and
    remedy of those that are not ok."""
    print(f"{subject}: {diagnosis.get('summary', '?')}")
    for check in diagnosis.get("checks") or []:
        status = str(check.get("status", "?"))
        print(f"  [{status:<7}] {check.get('name')}: {check.get('summary') or ''}")
        if status != "ok":
            if check.get("evidence"):
                print(f"            evidence: {text(check['evidence'])}")
            if check.get("remedy"):
                print(f"            remedy:   {check['remedy']}")
