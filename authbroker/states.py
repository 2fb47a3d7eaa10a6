"""The life of a connection: the statuses it passes through, and how long an authorization may
take. Defined once; the API, the events, storage and the use cases all speak these words.

    pending ──(code exchanged)──> active ──(grant refused; token refused, no refresh token)──> failed
       │                            │ └──(expired, no refresh token)──> expired
       └─(declined, timed out)─> failed     (re-authorization: any of them back to active)
    any live status ──(delete)──> revoking ──(revoked at the provider, wiped)──> revoked
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    FAILED = "failed"
    EXPIRED = "expired"
    REVOKING = "revoking"
    REVOKED = "revoked"


# Statuses whose connection still holds (or is about to hold) a grant at the provider.
LIVE = (Status.PENDING, Status.ACTIVE, Status.FAILED, Status.EXPIRED, Status.REVOKING)

# Seconds a started authorization (its state and PKCE verifier) stays usable: the user has this
# long to finish at the provider (RFC 6749 §10.12 wants a short-lived, single-use state).
AUTHORIZATION_LIFETIME = 600

# Seconds a connect link (`/connect/{token}`: a fresh authorization for the person who opens it)
# stays usable by default, and at most: long enough for a mail to be read, short enough that an
# old mail is not a standing way in.
CONNECT_LINK_LIFETIME = 7 * 86_400
CONNECT_LINK_MAX_LIFETIME = 30 * 86_400
# Seconds within which bare 401s reported for a token without a refresh token are counted from
# the first (the app's `reports_to_invalidate` of them mark it token_revoked); then it restarts.
UNCONFIRMED_401_WINDOW = 3600
