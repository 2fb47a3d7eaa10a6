"""Per-connection settings: values an app's URLs need for each connected account rather than
once per app, such as Zendesk's subdomain in `https://{subdomain}.zendesk.com/oauth/tokens`.

An app declares them (`connection_settings`, from a preset's `per_connection` placeholders or
given by hand) and keeps `{name}` in its URLs; each connection gives their values when its
authorization starts, and every request made for it goes to its own URLs.

The person starting a connection must not be able to move where the client secret and the
tokens go (the secret-destination rule of `services.apps`). So a setting may only be one label
of a host whose other labels the app fixes, the first one, with at least two fixed labels after
it that are not a public suffix (`{subdomain}.zendesk.com`: any value stays inside zendesk.com;
`{x}.co.uk` or `{x}.herokuapp.com` would let anyone's host receive the secret), and its value
is one DNS label (letters, digits, hyphens; no dot, so it cannot climb out of the fixed domain;
nothing that could end the host or start a path, query, port or userinfo). Both are checked when an app
(or a preset) declares a setting and when values arrive; the filled URLs still pass the
outbound rules (`authbroker.netguard`).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from publicsuffixlist import PublicSuffixList

__all__ = [
    "FIELD",
    "PLACEHOLDER",
    "TEMPLATED_FIELDS",
    "fill",
    "placeholders_in",
    "template_errors",
    "template_problem",
    "value_errors",
    "value_problem",
]

PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
"""`{name}` in a preset's or an app's values: a placeholder to fill."""
TEMPLATED_FIELDS = (
    "authorization_url",
    "token_url",
    "revoke_url",
    "probe_url",
    "issuer",
    "client_assertion_audience",
)
"""The app fields that may hold a per-connection setting: every URL a connection's requests,
its user's browser or its callback's check use."""
FIELD = "settings"
"""How the API names the values a connection gives (`settings.subdomain`)."""
FIXED_LABELS = 2
"""Labels a host must fix after the setting: a registrable domain at least, so that no value
reaches a host outside it (`{x}.com` would let any .com host receive the secret)."""
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def placeholders_in(value: Any) -> set[str]:
    """The placeholder names in a value (a string, or the strings inside lists and dicts)."""
    if isinstance(value, str):
        return set(PLACEHOLDER.findall(value))
    if isinstance(value, dict):
        return {p for v in value.values() for p in placeholders_in(v)}
    if isinstance(value, list):
        return {p for v in value for p in placeholders_in(v)}
    return set()


def template_problem(url: str, name: str) -> str | None:
    """Why `{name}` in `url` cannot be filled per connection, or None: it must be the whole
    first label of the host, appear nowhere else, and be followed by fixed labels."""
    token = "{" + name + "}"
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        host = ""
    labels = host.split(".")
    fixed = labels[1:]
    if url.count(token) != 1 or labels[0] != token:
        return f"{token} may only be the first label of the URL's host ({token}.example.com)"
    # All names, and the last not all digits: that would make the host an IPv4 address.
    names = all(_LABEL.fullmatch(label) for label in fixed) and not "".join(fixed[-1:]).isdigit()
    if len(fixed) < FIXED_LABELS or not names:
        return (
            f"the host's labels after {token} must be fixed names, at least "
            f"{FIXED_LABELS} ({token}.example.com), so that no value leaves that domain"
        )
    domain = ".".join(fixed).lower()
    if _public_suffixes().is_public(domain):
        return (
            f"{domain} is a public suffix (anyone may hold a name under it, as under co.uk or "
            f"herokuapp.com): a value could send the client secret to a host of its own; the "
            f"labels after {token} must hold the provider's own domain"
        )
    return None


@functools.cache
def _public_suffixes() -> PublicSuffixList:
    """The Public Suffix List as the installed package carries it, ICANN and private sections
    (parsed once, on the first template checked)."""
    return PublicSuffixList()


def template_errors(values: Mapping[str, Any]) -> list[dict[str, str]]:
    """What is wrong with an app's per-connection settings, as `[{field, message}]`: a URL
    using a placeholder the app does not declare, or in a place it may not be, and a declared
    setting no URL uses. `values` is a whole app definition."""
    declared = list(values.get("connection_settings") or [])
    errors: list[dict[str, str]] = []
    used: set[str] = set()
    for field in TEMPLATED_FIELDS:
        url = values.get(field)
        if not isinstance(url, str):
            continue
        for name in sorted(placeholders_in(url)):
            used.add(name)
            if name not in declared:
                errors.append(
                    {
                        "field": field,
                        "message": f"{{{name}}} is not one of the app's connection_settings "
                        f"({', '.join(declared) or 'none'}): fill it, or declare it",
                    }
                )
                continue
            problem = template_problem(url, name)
            if problem:
                errors.append({"field": field, "message": problem})
    for name in declared:
        if name not in used:
            errors.append(
                {
                    "field": "connection_settings",
                    "message": f"{name} is used by none of the app's URLs (write {{{name}}} as "
                    "the first label of a URL's host)",
                }
            )
    return errors


def value_problem(value: Any) -> str | None:
    """Why `value` cannot fill a setting, or None: it must be one DNS label."""
    if isinstance(value, str) and _LABEL.fullmatch(value):
        return None
    return (
        "must be one DNS label: 1 to 63 letters, digits and hyphens, not starting or ending "
        "with a hyphen, no dots"
    )


def value_errors(needed: Iterable[str], given: Mapping[str, Any]) -> list[dict[str, str]]:
    """What is wrong with the settings a connection gives for an app that needs `needed`:
    each missing, unknown or malformed one, as `[{field, message}]` (`settings.NAME`)."""
    needed = list(needed)
    takes = ", ".join(needed) or "none"
    errors = [
        {"field": f"{FIELD}.{name}", "message": f"unknown setting: the app takes {takes}"}
        for name in given
        if name not in needed
    ]
    for name in needed:
        if name not in given:
            errors.append(
                {
                    "field": f"{FIELD}.{name}",
                    "message": f"required: the app's URLs hold {{{name}}}, filled per connection",
                }
            )
        elif problem := value_problem(given[name]):
            errors.append({"field": f"{FIELD}.{name}", "message": problem})
    return errors


def fill(value: str, settings: Mapping[str, str]) -> str:
    """`value` with the placeholders `settings` names filled (others are left as written)."""
    return PLACEHOLDER.sub(lambda m: settings.get(m.group(1), m.group(0)), value)
