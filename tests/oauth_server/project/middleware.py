"""Process-global request counters for the test-only OAuth server, and a delay of token answers.

The server runs as a single threaded process, so a dict guarded by a lock is enough.
"""

import threading
import time
from collections import defaultdict
from urllib.parse import parse_qs

AUTHORIZE_PATH = "/o/authorize/"
TOKEN_PATH = "/o/token/"
REVOKE_PATH = "/o/revoke_token/"
RESOURCE_PATH = "/api/me"

_lock = threading.Lock()
_token_requests: "defaultdict[str, defaultdict[str, int]]" = defaultdict(lambda: defaultdict(int))
_revocations: "defaultdict[str, int]" = defaultdict(int)
_resource_requests: "defaultdict[str, int]" = defaultdict(int)
# The last token request's non-secret parameters of interest, by grant type.
_RECORDED = ("scope", "audience", "resource")
_last_params: "dict[str, dict[str, list[str]]]" = {}
# Requests by the host they were sent to (the Host header, without its port) and what they
# were: "authorize", "token:<grant>", "revoke", "resource".
_hosts: "defaultdict[str, defaultdict[str, int]]" = defaultdict(lambda: defaultdict(int))
# Seconds to hold every token answer back AFTER the request was processed (tokens issued,
# rotated ones revoked): a provider whose answer arrives late.
_token_delay = 0.0


def set_token_delay(seconds: float) -> None:
    global _token_delay
    _token_delay = max(0.0, float(seconds))


def snapshot() -> dict:
    with _lock:
        return {
            "token_requests": {
                grant: dict(by_status) for grant, by_status in _token_requests.items()
            },
            "revocations": dict(_revocations),
            "resource_requests": dict(_resource_requests),
            "last_params": {grant: dict(params) for grant, params in _last_params.items()},
        }


def hosts_snapshot() -> dict:
    with _lock:
        return {host: dict(kinds) for host, kinds in _hosts.items()}


def reset() -> None:
    with _lock:
        _token_requests.clear()
        _revocations.clear()
        _resource_requests.clear()
        _last_params.clear()
        _hosts.clear()


def _grant_type(request) -> str:
    # Read the raw body (cached by Django) rather than request.POST so that the
    # view still sees an untouched request whatever the content type is.
    try:
        body = request.body.decode("utf-8", "replace")
    except Exception:  # pragma: no cover - defensive
        return "unknown"
    form = parse_qs(body)
    values = form.get("grant_type")
    grant = values[0] if values else "missing"
    with _lock:
        _last_params[grant] = {k: form[k] for k in _RECORDED if k in form}
    return grant


class StatsMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        path = request.path_info
        grant = None
        if request.method == "POST" and path == TOKEN_PATH:
            grant = _grant_type(request)
        response = self.get_response(request)
        if grant is not None and _token_delay:
            time.sleep(_token_delay)
        status = str(response.status_code)
        host = request.META.get("HTTP_HOST", "").rsplit(":", 1)[0]
        with _lock:
            if grant is not None:
                _token_requests[grant][status] += 1
                _hosts[host][f"token:{grant}"] += 1
            elif request.method == "POST" and path == REVOKE_PATH:
                _revocations[status] += 1
                _hosts[host]["revoke"] += 1
            elif path == RESOURCE_PATH:
                _resource_requests[status] += 1
                _hosts[host]["resource"] += 1
            elif request.method == "GET" and path == AUTHORIZE_PATH:
                _hosts[host]["authorize"] += 1
        return response
