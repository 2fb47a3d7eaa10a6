"""Test-only views: protected resource, stats, token lookup, application creation."""

import hashlib
import json
import secrets

from django.contrib.auth import get_user_model
from django.db.models import F
from django.http import HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST
from oauth2_provider.models import (
    get_access_token_model,
    get_application_model,
    get_refresh_token_model,
)
from oauth2_provider.oauth2_backends import get_oauthlib_core

from . import middleware

REALM = "oauth-test-server"


def _checksum(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _bearer_challenge(error: str | None = None, description: str | None = None) -> str:
    parts = [f'realm="{REALM}"']
    if error:
        parts.append(f'error="{error}"')
    if description:
        parts.append(f'error_description="{description}"')
    return "Bearer " + ", ".join(parts)


@csrf_exempt
def me(request):
    """Protected resource.

    200 ``{"user", "scope", "client_id"}`` for a valid Bearer token; otherwise 401 with
    ``WWW-Authenticate: Bearer realm=..., error="invalid_token"`` (RFC 6750 §3.1). When no
    credentials are sent at all, the challenge carries no ``error`` (also RFC 6750 §3.1).
    DOT's own ``ProtectedResourceView``/``protected_resource`` answer a bare 403 instead,
    which is why this view does the check itself.
    """
    auth = request.META.get("HTTP_AUTHORIZATION", "")
    if not auth.lower().startswith("bearer "):
        response = JsonResponse(
            {"error": "invalid_request", "error_description": "missing bearer token"}, status=401
        )
        response["WWW-Authenticate"] = _bearer_challenge()
        return response
    valid, oauthlib_request = get_oauthlib_core().verify_request(request, scopes=[])
    if not valid:
        response = JsonResponse({"error": "invalid_token"}, status=401)
        response["WWW-Authenticate"] = _bearer_challenge(
            "invalid_token", "The access token is invalid, expired or revoked"
        )
        return response
    token = oauthlib_request.access_token
    return JsonResponse(
        {
            # A client credentials token acts for no user.
            "user": oauthlib_request.user.get_username() if oauthlib_request.user else None,
            "scope": token.scope,
            "client_id": token.application.client_id if token.application else None,
        }
    )


@require_GET
def stats(request):
    return JsonResponse(middleware.snapshot())


@require_GET
def host_stats(request):
    return JsonResponse(middleware.hosts_snapshot())


@csrf_exempt
@require_POST
def stats_reset(request):
    middleware.reset()
    return JsonResponse({"ok": True})


@csrf_exempt
@require_POST
def token_delay(request):
    """``{"seconds": s}``: answer every later token request s seconds after processing it."""
    try:
        seconds = float(json.loads(request.body or b"{}")["seconds"])
    except (ValueError, KeyError, TypeError) as exc:
        return JsonResponse({"error": f"bad request: {exc!r}"}, status=400)
    middleware.set_token_delay(seconds)
    return JsonResponse({"seconds": seconds})


@csrf_exempt
@require_POST
def introspect(request):
    """Look a raw token up in DOT's tables (no client authentication).

    ``{"active": bool, "type": "access"|"refresh"|null, ...}``. A refresh token that was
    rotated or revoked has ``revoked`` set and is reported inactive.
    """
    token = request.POST.get("token", "")
    if not token:
        return JsonResponse({"active": False, "type": None})
    checksum = _checksum(token)
    now = timezone.now()

    access = (
        get_access_token_model()
        .objects.select_related("application", "user")
        .filter(token_checksum=checksum)
        .first()
    )
    if access is not None:
        return JsonResponse(
            {
                "active": access.expires > now,
                "type": "access",
                "scope": access.scope,
                "client_id": access.application.client_id if access.application else None,
                "username": access.user.get_username() if access.user else None,
                "expires_in": int((access.expires - now).total_seconds()),
            }
        )

    refresh = (
        get_refresh_token_model()
        .objects.select_related("application", "user")
        .filter(token_checksum=checksum)
        .order_by(F("revoked").desc(nulls_first=True))
        .first()
    )
    if refresh is not None:
        return JsonResponse(
            {
                "active": refresh.revoked is None and refresh.access_token_id is not None,
                "type": "refresh",
                "revoked": refresh.revoked is not None,
                "client_id": refresh.application.client_id,
                "username": refresh.user.get_username(),
            }
        )
    return JsonResponse({"active": False, "type": None})


def create_application(
    *,
    redirect_uri: str,
    name: str,
    confidential: bool = True,
    client_id: str | None = None,
    client_secret: str | None = None,
    username: str | None = None,
    grant: str = "authorization-code",
):
    """Create an application for one grant (DOT's names: ``authorization-code`` or
    ``client-credentials``); returns ``(client_id, plaintext_secret)``."""
    Application = get_application_model()
    client_id = client_id or "test-" + secrets.token_hex(12)
    client_secret = (client_secret or secrets.token_urlsafe(32)) if confidential else ""
    user = None
    if username:
        user = get_user_model().objects.filter(username=username).first()
    Application.objects.create(
        client_id=client_id,
        client_secret=client_secret,  # hashed on save (hash_client_secret=True)
        client_type=Application.CLIENT_CONFIDENTIAL if confidential else Application.CLIENT_PUBLIC,
        authorization_grant_type=grant,
        redirect_uris=redirect_uri,
        name=name,
        user=user,
        skip_authorization=False,
        algorithm="",
    )
    return client_id, client_secret


@csrf_exempt
@require_POST
def applications(request):
    try:
        data = json.loads(request.body or b"{}")
        redirect_uri = data["redirect_uri"]
    except (ValueError, KeyError) as exc:
        return JsonResponse({"error": f"bad request: {exc!r}"}, status=400)
    client_id, client_secret = create_application(
        redirect_uri=redirect_uri,
        name=data.get("name") or "extra test app",
        confidential=bool(data.get("confidential", True)),
        client_id=data.get("client_id"),
        client_secret=data.get("client_secret"),
        grant=data.get("grant") or "authorization-code",
    )
    return JsonResponse({"client_id": client_id, "client_secret": client_secret}, status=201)


def health(request):
    return HttpResponse("ok", content_type="text/plain")
