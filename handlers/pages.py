"""The few HTML pages a person's browser lands on after a provider's redirect.

Plain strings with every value escaped: no template engine for three small pages.
"""

from __future__ import annotations

from html import escape

from aiohttp import web

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
{refresh}<title>{title} · authbroker</title>
<style>
body{{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;
color:#1f2328;line-height:1.5}}
h1{{font-size:1.4rem}} .ok{{color:#1a7f37}} .bad{{color:#cf222e}} .wait{{color:#9a6700}}
code{{background:#f6f8fa;padding:.1rem .3rem;border-radius:4px}}
</style></head>
<body><main><h1 class="{tone}">{title}</h1>{body}</main></body></html>
"""


def page(
    title: str,
    paragraphs: list[str],
    *,
    tone: str,
    status: int = 200,
    refresh_url: str | None = None,
) -> web.Response:
    """Render a page; `paragraphs` are plain text and are escaped here."""
    body = "".join(f"<p>{escape(p)}</p>" for p in paragraphs)
    refresh = (
        f'<meta http-equiv="refresh" content="1;url={escape(refresh_url, quote=True)}">\n'
        if refresh_url
        else ""
    )
    html = _PAGE.format(title=escape(title), body=body, tone=tone, refresh=refresh)
    return web.Response(
        text=html,
        status=status,
        content_type="text/html",
        headers={
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
            "X-Frame-Options": "DENY",
        },
    )


def wants_json(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    return "application/json" in accept and "text/html" not in accept
