"""Test-only OAuth 2.0 authorization server (django-oauth-toolkit) for end-to-end tests.

See :class:`OAuthTestServer`.
"""

from .server import (
    ApprovalError,
    OAuthTestServer,
    OAuthTestServerError,
    basic_auth_header,
    pkce_pair,
)

__all__ = [
    "ApprovalError",
    "OAuthTestServer",
    "OAuthTestServerError",
    "basic_auth_header",
    "pkce_pair",
]
