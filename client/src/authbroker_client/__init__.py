"""authbroker for integration runtimes: credentials in a request, auth events, webhooks.

from authbroker_client import AuthbrokerAuth, AuthbrokerClient

broker = AuthbrokerClient("http://authbroker:8080", api_key)
http = httpx.AsyncClient(auth=AuthbrokerAuth(broker, "acme-google"))
"""

from authbroker_client.auth import AuthbrokerAuth, AuthbrokerMiddleware
from authbroker_client.client import AuthbrokerClient
from authbroker_client.credentials import Credentials
from authbroker_client.errors import (
    ApiError,
    AuthbrokerError,
    BadRequest,
    ConnectionNotActive,
    NotFound,
    ServiceUnavailable,
    TokenUnavailable,
    Unauthorized,
    Unreachable,
    WebhookVerificationError,
)
from authbroker_client.events import Event, EventStream
from authbroker_client.webhooks import verify_webhook

__all__ = [
    "ApiError",
    "AuthbrokerAuth",
    "AuthbrokerClient",
    "AuthbrokerError",
    "AuthbrokerMiddleware",
    "BadRequest",
    "ConnectionNotActive",
    "Credentials",
    "Event",
    "EventStream",
    "NotFound",
    "ServiceUnavailable",
    "TokenUnavailable",
    "Unauthorized",
    "Unreachable",
    "WebhookVerificationError",
    "verify_webhook",
]
