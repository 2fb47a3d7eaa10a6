"""Revocation: whether deleting a connection ends its grant at the provider (RFC 7009)."""

from __future__ import annotations

from typing import Any

from authbroker.diagnosis.check import Check, check, iso
from authbroker.diagnosis.facts import AppCase, RecentEvent


def revocation(case: AppCase) -> Check:
    app = case.app
    if not app.revoke_url:
        return check(
            "revocation",
            "warning",
            "No revoke URL: deleting a connection cannot revoke its grant at the provider.",
            {"revoke_url": None},
            "Set the app's revoke_url if the provider has one (RFC 7009); otherwise users "
            "revoke access in the provider's settings (some providers issue no new refresh "
            "token until the old grant is revoked).",
        )
    # Revocations that asked the provider (None: the app had no revoke URL then), newest first.
    asked = [e for e in case.history.revocations if e.data.get("revoked_at_provider") is not None]
    refused = [e for e in asked if e.data.get("revoked_at_provider") is False]
    evidence: dict[str, Any] = {
        "revoke_url": app.revoke_url,
        "client_auth": app.client_auth,
        "recent_revocations": len(asked),
        "recent_revocations_refused": len(refused),
    }
    if not asked or asked[0].data.get("revoked_at_provider") is not False:
        return check(
            "revocation", "ok", "Deleted connections are revoked at the provider.", evidence
        )
    last = asked[0]
    evidence["last_refused"] = _answer(last)
    said = _said(last)
    if app.updated_at and last.at and app.updated_at > last.at:
        return check(
            "revocation",
            "warning",
            f"The provider did not confirm the revocation of {last.connection_id} at "
            f"{iso(last.at)} ({said}); the app has been updated since, so the next deletion "
            "tells whether the new settings work.",
            evidence,
            "Revoke the access of the deleted connection in the provider's settings.",
        )
    return check(
        "revocation",
        "failing",
        f"The provider did not confirm the revocation of {last.connection_id} at "
        f"{iso(last.at)} ({said}): the grants of deleted connections may still be alive there.",
        evidence,
        f"Check the app's revoke_url ({app.revoke_url}) against the provider's documentation, "
        f"and its client authentication (client_auth {app.client_auth}: the revoke endpoint "
        "may want the client credentials elsewhere, or refuse them). Meanwhile revoke the "
        "access of deleted connections in the provider's settings (the user's connected apps).",
    )


def _answer(event: RecentEvent) -> dict[str, Any]:
    return {
        "connection_id": event.connection_id,
        "occurred_at": event.occurred_at,
        **{
            key: event.data.get(key)
            for key in ("provider_error", "provider_status", "provider_description")
            if event.data.get(key) is not None
        },
    }


def _said(event: RecentEvent) -> str:
    """What the provider answered, as the summary tells it."""
    error, status = event.data.get("provider_error"), event.data.get("provider_status")
    if not error and not status:
        return "no answer recorded"
    said = str(error or "error") + (f", HTTP {status}" if status else "")
    description = event.data.get("provider_description")
    return said + (f": {description}" if description else "")
