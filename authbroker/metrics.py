"""Prometheus metrics, defined once: the web side and the workers record into the same names.

Labels carry app names, grant types, outcomes, routes and statuses: never a connection id (an
unbounded label set) and never anything secret.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

TOKEN_REQUESTS = Counter(
    "authbroker_token_requests_total",
    "Token endpoint requests to providers, by app, grant and outcome.",
    ["app", "grant", "outcome"],
)
TOKEN_REQUEST_SECONDS = Histogram(
    "authbroker_token_request_seconds",
    "Time providers took to answer token requests.",
    ["app", "grant"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
REFRESH_LAG_SECONDS = Histogram(
    "authbroker_refresh_lag_seconds",
    "How long after its refresh_at a refresh actually started.",
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 900),
)
CONNECTIONS = Gauge(
    "authbroker_connections", "Connections by status (sampled at scrape).", ["status"]
)
DUE_BACKLOG = Gauge(
    "authbroker_refresh_due_backlog",
    "Active connections whose refresh_at has passed (sampled at scrape).",
)
OUTBOX_LAG_SECONDS = Gauge(
    "authbroker_outbox_lag_seconds",
    "Age of the oldest event not yet relayed to Redis (0 when none; sampled at scrape).",
)
HTTP_REQUESTS = Counter(
    "authbroker_http_requests_total",
    "HTTP requests served, by route and status.",
    ["route", "method", "status"],
)
HTTP_REQUEST_SECONDS = Histogram(
    "authbroker_http_request_seconds",
    "HTTP request durations by route.",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 10),
)
EVENTS_RELAYED = Counter("authbroker_events_relayed_total", "Events relayed to Redis.")
REFRESHES_IN_FLIGHT = Gauge(
    "authbroker_refreshes_in_flight", "Refreshes this worker process is running now."
)
LOST_ANSWERS = Counter(
    "authbroker_refresh_answers_lost_total",
    "Refreshes whose answer was lost after the request was sent, by what came of it: recovered "
    "(the retry with the same token worked), pending (retrying later), rotation_lost.",
    ["outcome"],
)
PROBES = Counter(
    "authbroker_endpoint_probes_total",
    "Probes of unavailable token endpoints, by outcome (ok: it answered; failed).",
    ["outcome"],
)
ENDPOINTS_UNAVAILABLE = Gauge(
    "authbroker_token_endpoints_unavailable",
    "Token endpoints whose refreshes are held back as unavailable (sampled at scrape).",
)
WEBHOOK_DELIVERIES = Counter(
    "authbroker_webhook_deliveries_total",
    "Webhook delivery attempts, by outcome: delivered (2xx), rejected (another status), "
    "timeout, unreachable (no connection, refused, a forbidden address).",
    ["outcome"],
)
WEBHOOK_LAG_SECONDS = Histogram(
    "authbroker_webhook_delivery_lag_seconds",
    "From an event's occurred_at to its delivery's 2xx answer.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60, 600, 3600, 86_400),
)
WEBHOOKS_DISABLED = Counter(
    "authbroker_webhooks_disabled_total",
    "Webhook subscriptions disabled by authbroker, by reason: gone (410), failing (a day of "
    "failed attempts).",
    ["reason"],
)
