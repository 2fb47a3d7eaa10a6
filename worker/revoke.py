"""`revoke_connection`: end a grant at the provider (RFC 7009), then forget its secrets.

The refresh token goes first: revoking it ends the grant at most providers, so a failure after
that leaves nothing usable behind. Transient failures are retried with backoff; a provider that
stays down past the retries does not keep secrets alive here forever, but the event says the
provider was not told so that an operator can revoke access there.
"""

from __future__ import annotations

from typing import Any

from arq import Retry

from authbroker import oauth, timing
from authbroker.events import EventType, make_event
from authbroker.logs import get_logger
from storage import apps, connections, outbox
from worker.context import WorkerContext
from worker.instrument import token_request

log = get_logger("authbroker.revoke")

MAX_TRIES = 8


async def revoke_connection(ctx: dict[str, Any], connection_id: str) -> str:
    wc = WorkerContext.of(ctx)
    res = wc.resources
    found = await connections.get(res.pool, connection_id)
    if found is None or found.status != "revoking":
        return "nothing to do"
    app = await apps.get_by_id(res.pool, found.app_id)
    assert app is not None
    bound = log.bind(app=app.name, connection_id=connection_id)
    told_provider: bool | None = None
    refusal: oauth.OAuthError | None = None  # why the provider did not confirm it
    if app.revoke_url and (found.refresh_token or found.access_token):
        client = app.client(res.ring)
        told_provider = True
        tokens = (
            (found.open_refresh_token(res.ring), "refresh_token"),
            (found.open_access_token(res.ring), "access_token"),
        )
        for token, hint in tokens:
            if token is None:
                continue
            try:
                async with token_request(app.name, "revoke"):
                    await oauth.revoke_token(
                        wc.http,
                        client,
                        token=token,
                        token_type_hint=hint,  # type: ignore[arg-type]
                        timeout=res.settings.provider_timeout,
                    )
            except oauth.ProviderUnavailable as exc:
                attempt = int(ctx.get("job_try", 1))
                if attempt < MAX_TRIES:
                    delay = max(exc.retry_after or 0.0, timing.backoff(attempt, cap=120.0))
                    bound.warning("revoke_retry", error=exc.error, attempt=attempt, retry_in=delay)
                    raise Retry(defer=delay) from None
                bound.error("revoke_gave_up", error=exc.error, attempts=attempt)
                told_provider, refusal = False, exc
                break
            except oauth.OAuthError as exc:
                # e.g. unsupported_token_type for access tokens: the grant may still be gone
                # through the refresh token; note it and carry on.
                bound.warning("revoke_refused", token_type_hint=hint, error=exc.error)
                if hint == "refresh_token":
                    told_provider, refusal = False, exc
    await _wipe(wc, found, app, told_provider, refusal)
    return "revoked"


async def _wipe(
    wc: WorkerContext,
    found: connections.Connection,
    app: apps.App,
    told_provider: bool | None,
    refusal: oauth.OAuthError | None = None,
) -> None:
    res = wc.resources
    if told_provider is None:
        detail = (
            "The tokens were deleted here, but this app has no revoke URL: revoke the access in "
            "the provider's settings too (some providers issue no new refresh token until the "
            "old grant is revoked)."
        )
    elif told_provider:
        detail = "The grant was revoked at the provider and the tokens deleted."
    else:
        detail = (
            "The tokens were deleted here, but the provider could not confirm the revocation: "
            "revoke the access in the provider's settings."
        )
    data: dict[str, Any] = {"revoked_at_provider": told_provider}
    if refusal is not None:  # what the provider answered, for the app's diagnosis
        data.update(
            provider_error=refusal.error,
            provider_status=refusal.status,
            provider_description=refusal.description,
        )
    async with res.pool.acquire() as conn, conn.transaction():
        await connections.wipe(conn, found.id)
        await outbox.append(
            conn,
            make_event(
                EventType.REVOKED,
                app=app.name,
                connection_id=found.id,
                status="revoked",
                detail=detail,
                data=data,
            ),
        )
        if app.deleting and not await connections.count_live(conn, app.id):
            await apps.delete(conn, app.id)
            log.info("app_deleted", app=app.name)
    log.info("connection_revoked", app=app.name, connection_id=found.id, at_provider=told_provider)
