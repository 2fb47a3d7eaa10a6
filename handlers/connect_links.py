"""Connect links: `POST /v1/apps/{name}/connect-links` makes one (an API key's call), and
`GET /connect/{token}` is where the person it was given to opens it (public): a fresh
authorization, straight on to the provider's sign-in. What a link is, and when one is refused,
is decided by `services.connect_links`."""

from __future__ import annotations

from aiohttp import web

from authbroker.logs import get_logger
from authbroker.roles import Permission
from authbroker.schemas import ConnectLinkCreate
from handlers import models
from handlers.apps import APP_NAME, APP_NOT_FOUND, load_app
from handlers.context import resources
from handlers.operations import NO_STORE, STRING, Answer, operation, path_param
from handlers.pages import page, wants_json
from handlers.responses import ok, read_model
from services import authorizations, connect_links
from services.errors import Conflict, DomainError, Invalid

routes = web.RouteTableDef()
log = get_logger("authbroker.connect_links")

NOT_NOW = (
    "This link cannot be used right now: the service it connects to is not ready for sign-ins. "
    "Try again later, or ask the application that sent it."
)


def _refused(request: web.Request, exc: DomainError) -> web.Response:
    # What the app's state or settings are is the operator's business, not the link holder's:
    # the link's own fate (unknown, used, expired) is said as it is, anything else as "not now".
    message = NOT_NOW if isinstance(exc, (Conflict, Invalid)) else exc.message
    if wants_json(request):
        return ok(models.Error(error=exc.code, message=message), status=exc.http_status)
    return page("This link cannot be used", [message], tone="bad", status=exc.http_status)


@routes.post("/v1/apps/{name}/connect-links")
@operation(
    "createConnectLink",
    "connections",
    {
        201: Answer("The link: its URL is shown this once.", models.ConnectLink, headers=NO_STORE),
        404: APP_NOT_FOUND,
        409: "The app is being deleted (`app_deleting`), waits for its client secret "
        "(`app_awaiting_secret`), or the connection id belongs to another app "
        "(`connection_exists`).",
    },
    parameters=[APP_NAME],
    body=ConnectLinkCreate,
    body_required=False,
    permission=Permission.CONNECT_LINKS,
)
async def create_link(request: web.Request) -> web.Response:
    """Make a connect link: a URL that authorizes a connection when its user opens it.

    For the person who must authorize again, who has no API key: mail the URL or show it. It
    works once, expires (7 days by default, at most 30), needs no API key and grants nothing but
    that authorization, which starts when it is opened and lands on the callback's result page.
    With the `connection_id` of an existing connection it authorizes that one again; without
    one, a new connection id is made now and answered. Only the link's hash is kept.
    """
    res = resources(request)
    app = await load_app(request)
    body = await read_model(request, ConnectLinkCreate)
    link = await connect_links.create(
        res,
        app,
        connection_id=body.connection_id,
        scopes=body.scopes,
        expires_in=body.expires_in,
        settings=body.settings,
    )
    return ok(models.ConnectLink.of(link), status=201, headers={"Cache-Control": "no-store"})


REFUSED = "HTML for browsers, JSON when `Accept` asks for it."


@routes.get("/connect/{token}", allow_head=False)
@operation(
    "openConnectLink",
    "browser",
    {
        302: Answer(
            "On to the provider's sign-in; its redirect lands on the callback's result page.",
            headers={
                "Location": {"description": "The provider's authorize URL.", "schema": STRING}
            },
        ),
        400: Answer(
            "The connection settings the link carries no longer suit the app (it was changed "
            f"since, or a host now resolves to a forbidden address); the link stays usable. {REFUSED}",
            models.Error,
            {"text/html": STRING},
        ),
        404: Answer(
            f"No such link (`link_unknown`). {REFUSED}", models.Error, {"text/html": STRING}
        ),
        409: Answer(
            "The app cannot take sign-ins now (`app_deleting`, `app_awaiting_secret`, "
            f"`connection_exists`); the link stays usable. {REFUSED}",
            models.Error,
            {"text/html": STRING},
        ),
        410: Answer(
            f"The link was used (`link_used`) or has expired (`link_expired`). {REFUSED}",
            models.Error,
            {"text/html": STRING},
        ),
    },
    parameters=[path_param("token", "From the link's URL.", STRING)],
)
async def open_link(request: web.Request) -> web.Response:
    """Open a connect link: a fresh authorization, on to the provider's sign-in.

    Public: the link is its own credential, good for this once. The answers name only what
    happened to the link presented, never its app or connection.
    """
    try:
        started = await authorizations.start_from_link(
            resources(request), request.match_info["token"]
        )
    except DomainError as exc:
        log.info("connect_link_refused", reason=exc.code, detail=exc.message)
        return _refused(request, exc)
    return web.Response(
        status=302,
        headers={
            "Location": started.authorize_url,
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
        },
    )
