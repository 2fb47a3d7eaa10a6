"""When to refresh and when to retry: the arithmetic of the token lifecycle, kept pure.

Refreshing well before expiry leaves room for a provider outage; jitter keeps a batch authorized
together from refreshing together; retries back off exponentially with full jitter so a
recovering provider is not met by a thundering herd.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

MARGIN_SHARE = 0.2
JITTER_SHARE = 0.1
EXPIRED_ON_ARRIVAL_RETRY = 30.0


def refresh_margin(lifetime: float, app_margin: float) -> float:
    """The larger of the app's margin and 20 % of the lifetime, never more than half of it
    (a 60-second token refreshes after 30 s, not in a loop)."""
    return min(max(app_margin, MARGIN_SHARE * lifetime), lifetime / 2)


def refresh_at(
    issued_at: datetime,
    *,
    lifetime: float | None,
    app_margin: float,
    refresh_token_lifetime: float | None = None,
    rng: random.Random | None = None,
) -> datetime | None:
    """When to refresh a token issued at `issued_at`; None when nothing ever expires."""
    rng = rng or random
    deadlines = [t for t in (lifetime, refresh_token_lifetime) if t is not None]
    if not deadlines:
        return None
    moments = []
    for span in deadlines:
        if span <= 0:
            # Issued already expired: refresh soon, but not in a loop with the provider.
            moments.append(EXPIRED_ON_ARRIVAL_RETRY)
            continue
        margin = refresh_margin(span, app_margin)
        jitter = rng.uniform(0, JITTER_SHARE * margin)
        moments.append(max(span - margin - jitter, 0.0))
    return issued_at + timedelta(seconds=min(moments))


def backoff(
    attempt: int, *, base: float = 2.0, cap: float = 300.0, rng: random.Random | None = None
) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**(attempt-1))]."""
    rng = rng or random
    exponent = min(max(attempt - 1, 0), 62)  # past this the cap has long been reached
    ceiling = min(cap, base * 2.0**exponent)
    return rng.uniform(0, ceiling)


def retry_delay(
    attempt: int,
    *,
    seconds_left: float | None,
    retry_after: float | None = None,
    base: float = 5.0,
    cap: float = 900.0,
    expired_cap: float = 60.0,
    lead: float = 5.0,
    retry_after_cap: float = 3600.0,
    rng: random.Random | None = None,
) -> float:
    """Seconds until a connection's next refresh attempt after `attempt` failures in a row.

    Full-jitter backoff, at least a second, but never past the moment the access token expires
    (`seconds_left`, less `lead`): an outage of one connection must not let a still valid token
    die unrefreshed. Once it has expired, the wait is at most `expired_cap`. A provider's
    Retry-After (up to `retry_after_cap`) is honoured over both: it is the provider's word.
    """
    delay = max(backoff(attempt, base=base, cap=cap, rng=rng), 1.0)
    if seconds_left is not None:
        delay = min(delay, max(seconds_left - lead, 1.0) if seconds_left > 0 else expired_cap)
    if retry_after:
        delay = max(delay, min(retry_after, retry_after_cap))
    return delay


def probe_interval(
    probes: int,
    *,
    urgent: bool,
    retry_after: float | None = None,
    first: float = 2.0,
    cap: float = 30.0,
    urgent_every: float = 1.0,
    retry_after_cap: float = 3600.0,
) -> float:
    """Seconds until the next probe of an unavailable endpoint after `probes` probes failed:
    doubling from `first` up to `cap`, every `urgent_every` while waiting tokens are expiring
    (`urgent`: every second of the outage is a second of dead tokens, and one request a second
    costs a down provider nothing), and never sooner than the provider's Retry-After."""
    interval = urgent_every if urgent else min(cap, first * 2.0 ** min(max(probes - 1, 0), 30))
    if retry_after:
        interval = max(interval, min(retry_after, retry_after_cap))
    return interval
