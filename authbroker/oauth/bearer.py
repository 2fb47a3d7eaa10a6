"""RFC 6750 §3: what a resource server's WWW-Authenticate says about a token."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["BearerChallenge", "parse_bearer_challenge"]

_CHALLENGE = re.compile(r'([A-Za-z0-9_\-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


@dataclass(frozen=True)
class BearerChallenge:
    """The Bearer challenge of a 401/403; `error` is None when the service sent none
    (RFC 6750 §3.1: a request without authentication gets a challenge without an error)."""

    error: str | None
    scope: list[str] | None
    description: str | None


def parse_bearer_challenge(header: str | None) -> BearerChallenge | None:
    """Parse the Bearer challenge out of a WWW-Authenticate value; None if there is none."""
    if not header:
        return None
    match = re.search(r"(?:^|,)\s*Bearer\b(.*)", header, re.IGNORECASE | re.DOTALL)
    if match is None:
        return None
    rest = match.group(1)
    # Another scheme's challenge may follow: stop at ", Scheme " without "=".
    other = re.search(r",\s*[A-Za-z][A-Za-z0-9_\-]*\s+[A-Za-z0-9_\-]+\s*=", rest)
    if other:
        rest = rest[: other.start()]
    params: dict[str, str] = {}
    for key, quoted, token in _CHALLENGE.findall(rest):
        params.setdefault(key.lower(), (quoted if quoted else token).replace('\\"', '"'))
    scope = params.get("scope")
    return BearerChallenge(
        error=params.get("error"),
        scope=scope.split() if scope else None,
        description=params.get("error_description", "")[:300] or None,
    )
