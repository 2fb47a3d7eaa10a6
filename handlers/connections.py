"""Connections: start an authorization, look at connections, hand out credentials."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from authbroker import oauth
from authbroker.logs import get_logger
from authbroker.problems import Problem
from authbroker.schemas import ConnectionStart
from handlers.apps import load_app
from handlers.context import resources
from handlers.responses import fail, ok, read_model
from storage import authorizations, connections
from storage.connections import Connection, ConnectionConflict
from storage.jobs import enqueue_revokes

routes = web.RouteTableDef()
log = get_logger("authbroker.api")

AUTHORIZATION_LIFETIME = 600  # seconds; the state is single use and dies after 10 minutes
STATUSES = ("pending", "active", "failed", "expired", "revoking", "revoked")


def connection_view(c: Connection) -> dict[str, Any]:
    return {
        "connection_id": c.id,
        "app": c.app,
        "status": c.status,
        "problem": c.problem,
        "problem_detail": c.problem_detail
        or (Problem(c.problem).remedy if c.problem in Problem.__members__.values() else None),
        "requested_scopes": c.requested_scopes,
        "granted_scopes": c.granted_scopes,
        "token_type": c.token_type,
        "expires_at": c.expires_at,
        "refresh_at": c.refresh_at,
        "has_access_token": c.access_token is not None,
        "has_refresh_token": c.refresh_token is not None,
        "refresh_token_expires_at": c.refresh_token_expires_at,
        "failed_attempts": c.failed_attempts,
        "next_attempt_at": c.next_attempt_at,
        "last_error": c.last_error,
        "last_refresh_at": c.last_refresh_at,
        "authorized_at": c.authorized_at,
        "metadata": c.metadata,
        "created_at": c.created_at,
        "updated_at": c.updated_at,
    }


async def load_connection(request: web.Request) -> Connection:
    connection_id = request.match_info["connection_id"]
    found = await connections.get(resources(request).pool, connection_id)
    if found is None:
        fail(404, "connection_not_found", f"no connection with id {connection_id!r}")
    return found


@routes.post("/v1/apps/{name}/connections")
async def start_authorization(request: web.Request) -> web.Response:
    """Hand out an authorize URL; the connection becomes active once the worker has the tokens."""
    res = resources(request)
    app = await load_app(request)
    body = await read_model(request, ConnectionStart)
    connection_id = body.connection_id or f"conn_{uuid.uuid4().hex}"
    scopes = body.scopes if body.scopes is not None else app.scopes
    client = app.client(res.ring)
    state = oauth.new_state()
    verifier = oauth.new_code_verifier() if app.pkce else None
    authorize_url = oauth.build_authorize_url(
        client,
        redirect_uri=res.settings.redirect_url,
        scopes=scopes,
        state=state,
        code_challenge=oauth.code_challenge(verifier) if verifier else None,
    )
    try:
        async with res.pool.acquire() as conn, conn.transaction():
            created = await connections.start(
                conn,
                connection_id=connection_id,
                app_id=app.id,
                requested_scopes=scopes,
                metadata=body.metadata if "metadata" in body.model_fields_set else None,
            )
            authorization_id, expires_at = await authorizations.create(
                conn,
                res.ring,
                state_hash=oauth.state_digest(state),
                app_id=app.id,
                connection_id=connection_id,
                code_verifier=verifier,
                requested_scopes=scopes,
                redirect_uri=res.settings.redirect_url,
                lifetime_seconds=AUTHORIZATION_LIFETIME,
            )
    except ConnectionConflict:
        fail(409, "connection_exists", f"connection {connection_id!r} belongs to another app")
    log.info(
        "authorization_started",
        app=app.name,
        connection_id=connection_id,
        reauthorization=not created,
        authorization_id=str(authorization_id),
    )
    return ok(
        {
            "connection_id": connection_id,
            "authorize_url": authorize_url,
            "expires_at": expires_at,
            "authorization_id": str(authorization_id),
            "status_url": f"{res.settings.public_url}/oauth/status/{authorization_id}",
        },
        status=201,
    )


@routes.get("/v1/connections")
async def list_connections(request: web.Request) -> web.Response:
    res = resources(request)
    status = request.query.get("status")
    if status is not None and status not in STATUSES:
        fail(400, "invalid_status", f"status must be one of {', '.join(STATUSES)}")
    try:
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        fail(400, "invalid_limit", "limit must be an integer between 1 and 1000")
    if not 1 <= limit <= 1000:
        fail(400, "invalid_limit", "limit must be an integer between 1 and 1000")
    found = await connections.page(
        res.pool,
        app=request.query.get("app"),
        status=status,
        after=request.query.get("after"),
        limit=limit + 1,
    )
    more = len(found) > limit
    items = found[:limit]
    return ok(
        {
            "items": [connection_view(c) for c in items],
            "next": items[-1].id if more else None,
        }
    )


@routes.get("/v1/connections/{connection_id}")
async def show_connection(request: web.Request) -> web.Response:
    return ok(connection_view(await load_connection(request)))


@routes.get("/v1/connections/{connection_id}/credentials")
async def connection_credentials(request: web.Request) -> web.Response:
    """A valid access token and a ready `Authorization` value, or why there is none."""
    res = resources(request)
    found = await load_connection(request)
    if found.status != "active" or found.access_token is None:
        fail(
            409,
            "connection_not_active",
            f"connection is {found.status}"
            + (f": {found.problem}" if found.problem else "")
            + (" (authorization not completed yet)" if found.status == "pending" else ""),
            status=found.status,
            problem=found.problem,
        )
    now = datetime.now(UTC)
    if found.expires_at is not None and found.expires_at <= now:
        fail(
            503,
            "token_expired",
            "the access token expired and has not been refreshed yet",
            problem=str(Problem.TOKEN_EXPIRED),
            detail=Problem.TOKEN_EXPIRED.remedy,
            headers={"Retry-After": "5"},
        )
    access_token = found.open_access_token(res.ring)
    token_type = found.token_type or "Bearer"
    return ok(
        {
            "type": "oauth2",
            "access_token": access_token,
            "token_type": token_type,
            "expires_at": found.expires_at,
            "scopes": found.granted_scopes
            if found.granted_scopes is not None
            else found.requested_scopes,
            "authorization": f"{token_type} {access_token}",
        },
        headers={"Cache-Control": "no-store"},
    )


@routes.delete("/v1/connections/{connection_id}")
async def delete_connection(request: web.Request) -> web.Response:
    """Revoke at the provider (in a worker), then wipe: 202 while that happens."""
    res = resources(request)
    found = await load_connection(request)
    if found.status == "revoked":
        return web.Response(status=204)
    async with res.pool.acquire() as conn:
        await connections.begin_revoke(conn, found.id)
    await enqueue_revokes(res, [found.id])
    log.info("connection_delete_requested", app=found.app, connection_id=found.id)
    return ok({"connection_id": found.id, "status": "revoking"}, status=202)
