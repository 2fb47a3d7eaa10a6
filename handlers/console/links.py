"""The console's connect links: a button on a connection (and on the app, for a new one) that
makes a link (`services.connect_links`) and shows it once, to copy."""

from __future__ import annotations

from urllib.parse import quote, urlsplit

from aiohttp import web

from authbroker.schemas import ConnectLinkCreate
from handlers.apps import load_app
from handlers.console import forms
from handlers.console.render import FORM, PREFIX, action, render, see_other
from handlers.context import resources
from services import connect_links
from services.errors import DomainError

routes = web.RouteTableDef()


@routes.post(PREFIX + "/apps/{name}/connect-link")
@action
async def make_link(request: web.Request) -> web.StreamResponse:
    res = resources(request)
    app = await load_app(request)
    back = f"{PREFIX}/apps/{quote(app.name, safe='')}"
    _, data = forms.start_body(request[FORM], app.connection_settings)
    if "connection_id" in data:
        back += f"#conn-{quote(data['connection_id'], safe='')}"
    model, errors = forms.validate(ConnectLinkCreate, data)
    if model is None:
        shown = " ".join(f"{field}: {message}" for field, message in errors.items())
        return see_other(request, back, f"No link was made. {shown}", "bad")
    try:
        link = await connect_links.create(
            res,
            app,
            connection_id=model.connection_id,  # type: ignore[attr-defined]
            scopes=model.scopes,  # type: ignore[attr-defined]
            settings=model.settings,  # type: ignore[attr-defined]
        )
    except DomainError as exc:
        return see_other(request, back, f"No link was made: {exc.message}", "bad")
    return render(
        request,
        "connect_link.html",
        {
            "app_name": app.name,
            "link": link,
            "back": back,
            "provider": urlsplit(app.authorization_url).hostname or "the provider",
        },
        status=201,
    )
