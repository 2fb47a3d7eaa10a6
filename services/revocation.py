"""Ending grants: a connection deleted is revoked at the provider (RFC 7009), then its secrets
are forgotten; an app deleted goes once its last connection is.

The refresh token goes first: revoking it ends the grant at most providers, so a failure after
that leaves nothing usable behind. Transient failures are retried with backoff; a provider that
stays down past the retries does not keep secrets alive here forever, but the event says the
provider was not told so that an operator can revoke access there.
"""

from __future__ import annotations

from authbroker import oauth, timing
from authbroker.events import EventType, Revoked, Revoking, make_event
from authbroker.logs import get_logger
from authbroker.states import Status
from services import queue
from services.context import Context
from services.errors import Unavailable
from services.instrument import token_request
from storage import apps, connections, outbox
from storage.apps import App
from storage.connections import Connection
from storage.resources import Resources

log = get_logger("authbroker.revoke")

# Attempts at a provider that is down before the secrets are wiped without its word.
MAX_TRIES = 8


async def request_delete(res: Resources, found: Connection) -> bool:
    """Start revoking a connection (a worker revokes, then wipes); False when it is already
    revoked. Its open authorizations are cancelled: a user finishing consent later must not
    bring it back."""
    if found.status == Status.REVOKED:
        return False
    async with res.pool.acquire() as conn, conn.transaction():
        if await connections.begin_revoke(conn, found.id):
            await outbox.append(conn, revoking_event(found.app, found.id))
    await queue.enqueue_revokes(res, [found.id])
    log.info("connection_delete_requested", app=found.app, connection_id=found.id)
    return True


def revoking_event(app: str, connection_id: str) -> dict[str, object]:
    return make_event(
        EventType.REVOKING,
        app=app,
        connection_id=connection_id,
        status=Status.REVOKING,
        detail="Deleted: the grant is being revoked at the provider.",
        data=Revoking(),
    )


async def revoke(context: Context, connection_id: str, *, attempt: int = 1) -> str:
    """Revoke a connection being deleted, then wipe it. Raises `Unavailable` (retry_after) while
    the provider is down and `attempt` is below MAX_TRIES."""
    res = context.resources
    found = await connections.get(res.pool, connection_id)
    if found is None or found.status != Status.REVOKING:
        return "nothing to do"
    app = await apps.get_by_id(res.pool, found.app_id)
    assert app is not None
    bound = log.bind(app=app.name, connection_id=connection_id)
    told_provider: bool | None = None
    refusal: oauth.OAuthError | None = None  # why the provider did not confirm it
    app = app.for_connection(found.settings)
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
                        context.http,
                        client,
                        token=token,
                        token_type_hint=hint,  # type: ignore[arg-type]
                        timeout=res.settings.provider_timeout,
                        connect_timeout=res.settings.provider_connect_timeout,
                    )
            except oauth.ProviderUnavailable as exc:
                if attempt < MAX_TRIES:
                    delay = max(exc.retry_after or 0.0, timing.backoff(attempt, cap=120.0))
                    bound.warning("revoke_retry", error=exc.error, attempt=attempt, retry_in=delay)
                    raise Unavailable(exc.error, str(exc), retry_after=delay) from None
                bound.error("revoke_gave_up", error=exc.error, attempts=attempt)
                told_provider, refusal = False, exc
                break
            except oauth.OAuthError as exc:
                # e.g. unsupported_token_type for access tokens: the grant may still be gone
                # through the refresh token; note it and carry on.
                bound.warning("revoke_refused", token_type_hint=hint, error=exc.error)
                if hint == "refresh_token":
                    told_provider, refusal = False, exc
    await _wipe(res, found, app, told_provider, refusal)
    return "revoked"


async def _wipe(
    res: Resources,
    found: Connection,
    app: App,
    told_provider: bool | None,
    refusal: oauth.OAuthError | None = None,
) -> None:
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
    async with res.pool.acquire() as conn, conn.transaction():
        await connections.wipe(conn, found.id)
        await outbox.append(
            conn,
            make_event(
                EventType.REVOKED,
                app=app.name,
                connection_id=found.id,
                status=Status.REVOKED,
                detail=detail,
                data=Revoked(
                    revoked_at_provider=told_provider,
                    # What the provider answered, for the app's diagnosis.
                    provider_error=refusal.error if refusal else None,
                    provider_status=refusal.status if refusal else None,
                    provider_description=refusal.description if refusal else None,
                ),
            ),
        )
        if app.deleting and not await connections.count_live(conn, app.id):
            await apps.delete(conn, app.id)
            log.info("app_deleted", app=app.name)
    log.info("connection_revoked", app=app.name, connection_id=found.id, at_provider=told_provider)


async def revoke_unwanted(
    context: Context, app: App, *, refresh_token: str | None, access_token: str | None
) -> None:
    """A grant nobody holds any more, obtained for a connection deleted meanwhile or left
    behind when a connection moved to other settings: end it at the provider (best effort;
    `app` filled with the settings it was obtained under). The refresh token ends the grant
    where there is one."""
    if not app.revoke_url or not (refresh_token or access_token):
        return
    token, hint = (
        (refresh_token, "refresh_token") if refresh_token else (access_token, "access_token")
    )
    settings = context.resources.settings
    try:
        async with token_request(app.name, "revoke"):
            await oauth.revoke_token(
                context.http,
                app.client(context.resources.ring),
                token=token or "",
                token_type_hint=hint,  # type: ignore[arg-type]
                timeout=settings.provider_timeout,
                connect_timeout=settings.provider_connect_timeout,
            )
    except oauth.OAuthError as exc:
        log.warning("unwanted_grant_not_revoked", app=app.name, error=exc.error)


async def enqueue_stranded(res: Resources) -> int:
    """Enqueue revocations whose job never ran (Redis was down at the DELETE)."""
    stranded = await connections.stranded_revocations(res.pool, older_than_seconds=60, limit=500)
    for connection_id in stranded:
        await queue.enqueue_revoke(res, connection_id)
    return len(stranded)
