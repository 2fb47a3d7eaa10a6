"""Text authbroker can keep: what Postgres stores and UTF-8 encodes.

Postgres refuses NUL in text and in JSON strings, and a lone surrogate (which a JSON `\\ud800`
escape makes) cannot be encoded at all; JSON's `NaN` and `Infinity` are not JSON to Postgres
either. Accepted, any of them fails deep inside a write as a 500, after the request looked
fine. The edges check what they receive against these rules first, and name the field at fault.
"""

from __future__ import annotations

import math
from typing import Any

# Deeper than any document authbroker reads; deep enough nesting would exhaust the stack.
MAX_DEPTH = 32


def flaw(text: str) -> str | None:
    """Why `text` cannot be kept, or None."""
    if "\x00" in text:
        return "must not contain NUL characters"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode (it holds a lone surrogate)"
    return None


def json_flaw(value: Any, *, max_depth: int = MAX_DEPTH) -> tuple[str, str] | None:
    """The first place in parsed JSON that cannot be kept, as (field, why): text or a key with
    a `flaw`, a number that is not finite, nesting deeper than `max_depth`. Fields are named as
    validation errors name them (`metadata.region`, `apps.0.client_id`, `(body)` for the whole)."""
    pending: list[tuple[Any, tuple[str, ...]]] = [(value, ())]
    while pending:
        item, path = pending.pop()
        where = ".".join(path) or "(body)"
        if len(path) > max_depth:
            return where, f"is nested more than {max_depth} levels deep"
        if isinstance(item, str):
            why = flaw(item)
            if why:
                return where, why
        elif isinstance(item, float) and not math.isfinite(item):
            return where, "must be a finite number (NaN and Infinity are not JSON)"
        elif isinstance(item, dict):
            for key in item:
                why = flaw(key)
                if why:
                    return ".".join((*path, repr(key))), f"has a key that {why}"
            pending.extend((inner, (*path, key)) for key, inner in reversed(item.items()))
        elif isinstance(item, list):
            pending.extend((inner, (*path, str(i))) for i, inner in reversed(list(enumerate(item))))
    return None
