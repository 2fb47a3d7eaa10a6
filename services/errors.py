"""What a use case says when it refuses: a code to branch on, words for people, and the facts
that explain it. Each edge renders them its own way: the API as an HTTP status with a JSON
body, the console as a message next to the form, the CLI as a line on stderr and an exit code.
"""

from __future__ import annotations

from typing import Any, ClassVar


class DomainError(Exception):
    """`code` is short and stable (`connection_not_found`, `app_deleting`, …); `message` says
    what was wrong; `details` are the fields that explain it (`problem`, `detail`, `status`,
    `next_attempt_at`, …); `retry_after` is seconds until trying again may work."""

    http_status: ClassVar[int] = 400

    def __init__(
        self, code: str, message: str, *, retry_after: float | None = None, **details: Any
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.details = details


class Invalid(DomainError):
    """The request itself is wrong: fix it and send it again."""

    http_status = 400


class Forbidden(DomainError):
    """The caller may not do this."""

    http_status = 403


class NotFound(DomainError):
    http_status = 404


class Conflict(DomainError):
    """The request is fine, but the state of what it names does not allow it now."""

    http_status = 409


class Gone(DomainError):
    """What it names existed and is used up or expired: it will not work again."""

    http_status = 410


class Unavailable(DomainError):
    """Not now: it may work later (`retry_after`)."""

    http_status = 503
