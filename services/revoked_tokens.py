"""Access tokens the provider no longer accepts, on connections that cannot get another because
they have no refresh token (GitHub OAuth App tokens, Notion, Facebook's long-lived tokens).

A refresh is no cure there, so the only question is whether the token is dead, and evidence
decides it (`services.connections.report`, `services.probes`):

- a runtime reports `invalid_token` (RFC 6750 §3.1: the web service says the token is invalid,
  expired or revoked): dead;
- a bare 401 (no Bearer error) is checked at the app's probe URL with the same token: a 401
  there confirms it, another answer says the token works (`accepted`), no answer or the
  service failing (5xx, 429) confirms nothing;
- a bare 401 nothing can confirm is counted (`storage.connections.count_unconfirmed_401`): the
  app's `reports_to_invalidate`-th within an hour confirms it. The count restarts after an hour,
  or when a new token is stored.

A dead token fails the connection with `token_revoked` and one `connection.invalidated` event,
in one transaction (`invalidate`); its credentials then answer that problem.
"""

from __future__ import annotations

import aiohttp
import asyncpg

from authbroker.events import EventType, Invalidated, make_event
from authbroker.logs import get_logger
from authbroker.problems import Problem
from authbroker.states import Status
from storage import connections, outbox
from storage.connections import Connection

log = get_logger("authbroker.revoked_tokens")


async def probe_status(
    http: aiohttp.ClientSession, url: str, access_token: str, *, limits: aiohttp.ClientTimeout
) -> int | None:
    """What the probe URL answers a GET with the token: its HTTP status, or None when it could
    not be reached (which says nothing of the token). Redirects are not followed."""
    try:
        async with http.get(
            url,
            headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"},
            timeout=limits,
            allow_redirects=False,
        ) as response:
            return response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.info("probe_unreachable", error=type(exc).__name__)
        return None


def accepted(probe: int | None) -> bool:
    """Whether the probe URL's answer says it took the token: anything but a 401, no answer, or
    a failure of the service itself (5xx, 429), which say nothing of the token."""
    return probe is not None and probe != 401 and probe != 429 and probe < 500


async def invalidate(conn: asyncpg.Connection, found: Connection, why: Invalidated) -> bool:
    """Within the caller's transaction: fail the connection with `token_revoked` and publish
    `connection.invalidated` saying why, unless a new token was stored since `found` was read or
    it is no longer active (another report or probe was first). True only for the call that did
    it."""
    problem = Problem.TOKEN_REVOKED
    ended = await connections.end_access(
        conn, found.id, found.version, problem=str(problem), detail=problem.remedy
    )
    if ended:
        await outbox.append(
            conn,
            make_event(
                EventType.INVALIDATED,
                app=found.app,
                connection_id=found.id,
                status=Status.FAILED,
                problem=problem,
                data=why,
            ),
        )
        log.warning(
            "token_revoked",
            app=found.app,
            connection_id=found.id,
            reported_status=why.reported_status,
            reported_error=why.reported_error,
            probe_status=why.probe_status,
            reports=why.reports,
        )
    return ended
