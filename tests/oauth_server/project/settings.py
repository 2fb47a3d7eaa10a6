"""Django settings for the test-only OAuth 2.0 authorization server.

Everything that varies per test run comes from environment variables that
``tests.oauth_server.OAuthTestServer`` sets before starting the subprocess:

``OAUTH_TEST_SERVER_DIR``                directory holding the SQLite database (required)
``OAUTH_TEST_ACCESS_TOKEN_LIFETIME``     ACCESS_TOKEN_EXPIRE_SECONDS (default 3600)
``OAUTH_TEST_REFRESH_GRACE_SECONDS``     REFRESH_TOKEN_GRACE_PERIOD_SECONDS (default 0)
``OAUTH_TEST_REFRESH_REUSE_PROTECTION``  "1" enables REFRESH_TOKEN_REUSE_PROTECTION (default off,
                                         which is DOT's default)
``OAUTH_TEST_AUTH_CODE_LIFETIME``        AUTHORIZATION_CODE_EXPIRE_SECONDS (default 60)
``OAUTH_TEST_SECRET_KEY``                Django SECRET_KEY (random per run if unset)

This is *not* a production configuration (DEBUG off, but MD5 password hashing
for speed, plaintext token storage, no HTTPS).
"""

import os
import secrets
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent
DATA_DIR = Path(os.environ.get("OAUTH_TEST_SERVER_DIR") or PROJECT_DIR / ".data")


def _int_env(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


SECRET_KEY = os.environ.get("OAUTH_TEST_SECRET_KEY") or secrets.token_urlsafe(50)
DEBUG = False
# Names under .localhost too: per-connection settings are tested with hosts such as
# acme.provider.localhost that the tests resolve to loopback.
ALLOWED_HOSTS = ["127.0.0.1", ".localhost"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "oauth2_provider",
]

MIDDLEWARE = [
    "project.middleware.StatsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]

ROOT_URLCONF = "project.urls"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # Project templates win over the app templates (minimal oauth2_provider/base.html).
        "DIRS": [PROJECT_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
            ],
        },
    },
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": DATA_DIR / "oauth_test_server.sqlite3",
        "OPTIONS": {
            # The server is threaded: serialise writers instead of failing with
            # "database is locked" when two requests write at the same time.
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL;PRAGMA synchronous=NORMAL",
        },
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Build the schema straight from the models (``migrate --run-syncdb``) instead of
# replaying every migration: this is a throw-away database, and it starts faster.
MIGRATION_MODULES = {
    "auth": None,
    "contenttypes": None,
    "sessions": None,
    "oauth2_provider": None,
}

# Fast hashing: DOT hashes client secrets with the default password hasher and checks
# them on every token request; PBKDF2 would cost ~0.3 s per token call.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
AUTH_PASSWORD_VALIDATORS = []

LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/accounts/login/"

USE_TZ = True
TIME_ZONE = "UTC"
USE_I18N = False
STATIC_URL = "/static/"

SESSION_COOKIE_NAME = "oauth_test_sessionid"
CSRF_COOKIE_NAME = "oauth_test_csrftoken"

OAUTH2_PROVIDER = {
    "SCOPES": {
        "read": "Read access",
        "write": "Write access",
        "profile": "Access to the user profile",
    },
    "DEFAULT_SCOPES": ["read"],
    "ACCESS_TOKEN_EXPIRE_SECONDS": _int_env("OAUTH_TEST_ACCESS_TOKEN_LIFETIME", 3600),
    "AUTHORIZATION_CODE_EXPIRE_SECONDS": _int_env("OAUTH_TEST_AUTH_CODE_LIFETIME", 60),
    "ROTATE_REFRESH_TOKEN": True,
    "REFRESH_TOKEN_GRACE_PERIOD_SECONDS": _int_env("OAUTH_TEST_REFRESH_GRACE_SECONDS", 0),
    # DOT's default (False): a rotated-out refresh token is refused with invalid_grant,
    # but replaying it does not revoke the rest of the token family.
    "REFRESH_TOKEN_REUSE_PROTECTION": os.environ.get("OAUTH_TEST_REFRESH_REUSE_PROTECTION") == "1",
    "PKCE_REQUIRED": True,
    # Only S256: reject code_challenge_method=plain.
    "COMPLIANT_BCP_RFC9700_PKCE_METHOD": True,
    "ALLOWED_REDIRECT_URI_SCHEMES": ["http", "https"],
    "REQUEST_APPROVAL_PROMPT": "force",
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {
        "django.server": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        "django.request": {"handlers": ["stderr"], "level": "ERROR", "propagate": False},
        "oauth2_provider": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
    },
}
