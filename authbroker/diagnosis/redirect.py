"""The way to the provider and back: the authorization URL users are sent to, and the redirect
URL the provider must know."""

from __future__ import annotations

from typing import Any

from authbroker.diagnosis.check import Check, check, plural
from authbroker.diagnosis.facts import AppCase, ConnectionCase, EndpointAnswer
from authbroker.problems import Problem

# Answers to a bare GET that say there is no authorization endpoint at this URL. Anything else
# below 500 says there is one: providers answer 400 (no client_id), 401 or a redirect to a login.
NOT_THERE = frozenset({404, 410})

_EXPIRED_ELSEWHERE = (
    " (A wrong authorization URL looks the same from here: the app's diagnosis fetches it.)"
)


def _remedy(redirect_url: str) -> str:
    return (
        f"Copy {redirect_url} exactly (scheme, host, port and path, no trailing slash) into the "
        "redirect/callback URLs of the provider's application"
    )


def connection_redirect_url(case: ConnectionCase) -> Check:
    url = case.redirect_url
    evidence = {"redirect_url": url, "last_error": case.connection.last_error}
    if case.has(Problem.REDIRECT_MISMATCH):
        return check(
            "redirect_url",
            "failing",
            f"The provider refused the redirect URL: its application does not list {url}.",
            evidence,
            _remedy(url) + ", then authorize again.",
        )
    if case.connection.problem == Problem.AUTHORIZATION_EXPIRED:
        return check(
            "redirect_url",
            "warning",
            "The authorization expired without the browser coming back: providers usually show "
            "their own error page, not a redirect, when the redirect URL is not registered."
            + _EXPIRED_ELSEWHERE,
            evidence,
            _remedy(url) + ", then authorize again.",
        )
    return check(
        "redirect_url", "ok", f"No redirect error recorded; the provider must list {url}.", evidence
    )


def app_redirect_url(case: AppCase) -> Check:
    url = case.redirect_url
    refused, expired = (
        case.count(Problem.REDIRECT_MISMATCH),
        case.count(Problem.AUTHORIZATION_EXPIRED),
    )
    evidence = case.with_count(
        Problem.REDIRECT_MISMATCH, redirect_url=url, authorizations_expired=expired
    )
    if refused:
        return check(
            "redirect_url",
            "failing",
            f"The provider refused the redirect URL for {plural(refused, 'connection')}: its "
            f"application does not list {url}.",
            evidence,
            _remedy(url) + ".",
        )
    if expired:
        summary = (
            f"{plural(expired, 'authorization')} expired without the browser coming back: "
            "providers usually show their own error page when the redirect URL is not registered."
        )
        if _unreachable(case.authorization_answer):
            summary += " The authorization URL is wrong too (see authorization_url): users saw an error there."
        return check("redirect_url", "warning", summary, evidence, _remedy(url) + ".")
    return check(
        "redirect_url", "ok", f"No redirect error recorded; the provider must list {url}.", evidence
    )


def _unreachable(answer: EndpointAnswer | None) -> bool:
    return answer is not None and (
        answer.status in NOT_THERE or answer.error not in (None, "timeout")
    )


def authorization_url(case: AppCase) -> Check:
    """What the authorization URL answered to a bare GET: whether users reach a provider."""
    answer = case.authorization_answer
    url = case.app.authorization_url
    evidence: dict[str, Any] = {
        "authorization_url": url,
        "answer": answer,
        "authorizations_expired": case.count(Problem.AUTHORIZATION_EXPIRED),
    }
    remedy = (
        "Correct the app's authorization_url: copy it from the provider's documentation, or "
        "from the authorization_endpoint of its /.well-known/openid-configuration."
    )
    if not url:
        return check(
            "authorization_url",
            "ok",
            "The app has no authorization URL: it makes service connections only (client "
            "credentials); users cannot connect with it.",
            evidence,
        )
    if answer is None:
        return check("authorization_url", "ok", "The authorization URL was not fetched.", evidence)
    if answer.error == "not_allowed":
        return check(
            "authorization_url",
            "failing",
            f"The authorization URL may not be used ({answer.detail}).",
            evidence,
            remedy,
        )
    if answer.error == "timeout":
        return check(
            "authorization_url",
            "warning",
            f"The authorization URL did not answer in time ({answer.detail}).",
            evidence,
            "Check the host of the app's authorization_url; if it is right, the provider is "
            "slow or this server cannot reach it (users' browsers may still).",
        )
    if answer.error is not None:
        return check(
            "authorization_url",
            "failing",
            f"The authorization URL cannot be reached ({answer.error}: {answer.detail}): users "
            "sent there see a browser error instead of the provider's login.",
            evidence,
            remedy + " If it is right, check that this server can reach the provider.",
        )
    if answer.status in NOT_THERE:
        return check(
            "authorization_url",
            "failing",
            f"The authorization URL answers HTTP {answer.status}: the provider has no "
            "authorization endpoint there, so users see its error page and never come back.",
            evidence,
            remedy,
        )
    if answer.status is not None and answer.status >= 500:
        return check(
            "authorization_url",
            "warning",
            f"The authorization URL answers HTTP {answer.status}: the provider is failing, or "
            "this is not its authorization endpoint.",
            evidence,
            "Try again later; if it lasts, check the app's authorization_url.",
        )
    return check(
        "authorization_url",
        "ok",
        f"The authorization endpoint answers (HTTP {answer.status}).",
        evidence,
    )
