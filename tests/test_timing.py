"""The arithmetic of the token lifecycle (authbroker.timing): when to refresh, when to retry.

Pure functions; randomness comes from a seeded `random.Random`, so every run sees the same values.
"""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authbroker import timing

ISSUED = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
TEN_YEARS = 10 * 365 * 86_400.0
DAY = 86_400.0
EPSILON = 1e-3  # seconds: timedelta keeps microseconds


def seconds_after_issue(moment: datetime | None) -> float:
    assert moment is not None
    return (moment - ISSUED).total_seconds()


# --------------------------------------------------------------------------------------------
# refresh_margin
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lifetime", "app_margin", "expected"),
    [
        (60, 300, 30),  # never more than half: refreshes after 30 s, not in a loop
        (3600, 300, 720),  # 20 % of the lifetime beats the app's margin
        (100_000, 300, 20_000),
        (3600, 1000, 1000),  # the app's margin beats 20 %
        (3600, 0, 720),
        (1, 300, 0.5),
    ],
)
def test_refresh_margin(lifetime: float, app_margin: float, expected: float) -> None:
    assert timing.refresh_margin(lifetime, app_margin) == pytest.approx(expected)


@given(
    lifetime=st.floats(min_value=1, max_value=TEN_YEARS, allow_nan=False),
    app_margin=st.floats(min_value=0, max_value=DAY, allow_nan=False),
)
def test_refresh_margin_bounds(lifetime: float, app_margin: float) -> None:
    margin = timing.refresh_margin(lifetime, app_margin)
    assert margin <= lifetime / 2
    assert margin >= min(app_margin, lifetime / 2)
    assert margin >= 0.2 * lifetime


# --------------------------------------------------------------------------------------------
# refresh_at
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(50))
def test_refresh_at_is_margin_plus_jitter_before_expiry(seed: int) -> None:
    moment = timing.refresh_at(ISSUED, lifetime=3600, app_margin=300, rng=random.Random(seed))
    # Margin 720 s (20 % of 3600 s), jitter up to 72 s (10 % of the margin).
    after = seconds_after_issue(moment)
    assert 3600 - 720 - 72 - EPSILON <= after <= 3600 - 720 + EPSILON


def test_a_short_token_refreshes_at_half_its_life_not_in_a_loop() -> None:
    rng = random.Random(7)
    for _ in range(200):
        after = seconds_after_issue(timing.refresh_at(ISSUED, lifetime=60, app_margin=300, rng=rng))
        # Margin capped at 30 s, jitter up to 3 s.
        assert 27 - EPSILON <= after <= 30 + EPSILON


def test_a_batch_issued_together_does_not_refresh_together() -> None:
    rng = random.Random(2024)
    moments = [
        seconds_after_issue(timing.refresh_at(ISSUED, lifetime=3600, app_margin=300, rng=rng))
        for _ in range(1000)
    ]
    spread = max(moments) - min(moments)
    jitter = 0.1 * 720
    assert spread > 0.5 * jitter  # spread over most of the jitter window
    assert spread <= jitter + EPSILON
    assert len(set(moments)) > 900  # hardly any two in the same instant
    assert all(moment <= 3600 - 720 + EPSILON for moment in moments)


def test_nothing_expires_means_no_refresh() -> None:
    assert timing.refresh_at(ISSUED, lifetime=None, app_margin=300) is None
    assert (
        timing.refresh_at(ISSUED, lifetime=None, app_margin=300, refresh_token_lifetime=None)
        is None
    )


@pytest.mark.parametrize("seed", range(20))
def test_the_earlier_deadline_wins(seed: int) -> None:
    # Access token for a day, refresh token for two hours: refreshed before the refresh token dies.
    moment = timing.refresh_at(
        ISSUED,
        lifetime=DAY,
        app_margin=300,
        refresh_token_lifetime=7200,
        rng=random.Random(seed),
    )
    after = seconds_after_issue(moment)
    assert 7200 - 1440 - 144 - EPSILON <= after <= 7200 - 1440 + EPSILON

    # The other way round: the access token dies first.
    moment = timing.refresh_at(
        ISSUED,
        lifetime=3600,
        app_margin=300,
        refresh_token_lifetime=30 * DAY,
        rng=random.Random(seed),
    )
    after = seconds_after_issue(moment)
    assert 3600 - 792 - EPSILON <= after <= 3600 - 720 + EPSILON

    # Only a refresh-token lifetime (no expires_in): still refreshed in time.
    moment = timing.refresh_at(
        ISSUED,
        lifetime=None,
        app_margin=300,
        refresh_token_lifetime=30 * DAY,
        rng=random.Random(seed),
    )
    after = seconds_after_issue(moment)
    assert 0 < after <= 30 * DAY * 0.8 + EPSILON


@settings(max_examples=300, deadline=None)
@given(
    lifetime=st.floats(min_value=1, max_value=TEN_YEARS, exclude_min=True, allow_nan=False),
    refresh_lifetime=st.none()
    | st.floats(min_value=1, max_value=TEN_YEARS, exclude_min=True, allow_nan=False),
    app_margin=st.floats(min_value=0, max_value=DAY, allow_nan=False),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_refresh_is_strictly_between_issue_and_expiry(
    lifetime: float, refresh_lifetime: float | None, app_margin: float, seed: int
) -> None:
    moment = timing.refresh_at(
        ISSUED,
        lifetime=lifetime,
        app_margin=app_margin,
        refresh_token_lifetime=refresh_lifetime,
        rng=random.Random(seed),
    )
    assert moment is not None
    first_deadline = min(t for t in (lifetime, refresh_lifetime) if t is not None)
    assert ISSUED < moment < ISSUED + timedelta(seconds=first_deadline)
    # At least 45 % of the life is used (margin at most half, jitter at most 10 % of it) ...
    assert seconds_after_issue(moment) >= 0.45 * first_deadline - EPSILON
    # ... and at least 20 % is left (the margin).
    assert seconds_after_issue(moment) <= 0.8 * first_deadline + EPSILON


# --------------------------------------------------------------------------------------------
# backoff
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("base", "cap"), [(2.0, 300.0), (5.0, 900.0)])
def test_backoff_stays_within_full_jitter_bounds_and_the_ceiling_grows(
    base: float, cap: float
) -> None:
    rng = random.Random(11)
    highest = []
    for attempt in range(1, 16):
        ceiling = min(cap, base * 2 ** (attempt - 1))
        samples = [timing.backoff(attempt, base=base, cap=cap, rng=rng) for _ in range(2000)]
        assert all(0 <= s <= ceiling for s in samples)
        # Full jitter: the whole range is used, up to close to the ceiling.
        assert max(samples) > 0.95 * ceiling
        assert min(samples) < 0.05 * ceiling
        highest.append(max(samples))
    # The reachable wait doubles with each attempt until the cap, then stays there.
    uncapped = [h for attempt, h in enumerate(highest, 1) if base * 2 ** (attempt - 1) < cap]
    assert len(uncapped) >= 5
    assert all(b > a * 1.5 for a, b in itertools.pairwise(uncapped))
    assert all(h <= cap for h in highest)
    assert highest[-1] > 0.95 * cap


@given(attempt=st.integers(min_value=1, max_value=1024), seed=st.integers(0, 2**32 - 1))
def test_backoff_never_exceeds_the_cap(attempt: int, seed: int) -> None:
    wait = timing.backoff(attempt, base=5.0, cap=900.0, rng=random.Random(seed))
    assert 0 <= wait <= min(900.0, 5.0 * 2.0 ** min(attempt - 1, 20))


@pytest.mark.parametrize("attempt", [1025, 1100, 10_000])
def test_backoff_after_very_many_attempts_is_capped(attempt: int) -> None:
    wait = timing.backoff(attempt, base=5.0, cap=900.0, rng=random.Random(1))
    assert 0 <= wait <= 900.0


# --------------------------------------------------------------------------------------------
# retry_delay: per-connection backoff, never past the token's expiry
# --------------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    attempt=st.integers(min_value=1, max_value=10_000),
    seconds_left=st.one_of(st.none(), st.floats(min_value=-TEN_YEARS, max_value=TEN_YEARS)),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_a_retry_never_waits_past_the_expiry(
    attempt: int, seconds_left: float | None, seed: int
) -> None:
    delay = timing.retry_delay(attempt, seconds_left=seconds_left, rng=random.Random(seed))
    assert 1.0 <= delay <= 900.0
    if seconds_left is not None and seconds_left > 6.0:
        assert delay <= seconds_left - 5.0  # retried while the token still works
    if seconds_left is not None and seconds_left <= 0:
        assert delay <= 60.0  # expired: every minute at least


@settings(max_examples=200, deadline=None)
@given(
    attempt=st.integers(min_value=1, max_value=100),
    seconds_left=st.one_of(st.none(), st.floats(min_value=-DAY, max_value=DAY)),
    retry_after=st.floats(min_value=0.5, max_value=10 * DAY),
)
def test_retry_after_is_honoured_up_to_an_hour(
    attempt: int, seconds_left: float | None, retry_after: float
) -> None:
    delay = timing.retry_delay(
        attempt, seconds_left=seconds_left, retry_after=retry_after, rng=random.Random(1)
    )
    assert delay >= min(retry_after, 3600.0)


# --------------------------------------------------------------------------------------------
# probe_interval: an unavailable endpoint probed at growing intervals
# --------------------------------------------------------------------------------------------


def test_probes_back_off_to_thirty_seconds() -> None:
    intervals = [timing.probe_interval(n, urgent=False) for n in range(1, 8)]
    assert intervals == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


@given(probes=st.integers(min_value=1, max_value=10**6))
def test_probes_stay_frequent_while_tokens_expire(probes: int) -> None:
    assert timing.probe_interval(probes, urgent=True) == 1.0


@given(
    probes=st.integers(min_value=1, max_value=1000),
    urgent=st.booleans(),
    retry_after=st.floats(min_value=0.1, max_value=100_000),
)
def test_a_probe_waits_for_retry_after(probes: int, urgent: bool, retry_after: float) -> None:
    interval = timing.probe_interval(probes, urgent=urgent, retry_after=retry_after)
    assert interval >= min(retry_after, 3600.0)
    assert interval <= max(30.0, min(retry_after, 3600.0))
