"""Provider presets: every preset makes a valid app, given values win, placeholders are filled."""

from __future__ import annotations

from typing import Any, get_args
from urllib.parse import urlsplit

import pytest

from authbroker import connection_settings, presets
from authbroker.oauth import ClientAuth
from authbroker.schemas import AppCreate

REQUIRED = {
    "google",
    "microsoft",
    "github",
    "slack",
    "salesforce",
    "hubspot",
    "xero",
    "quickbooks",
    "atlassian",
    "dropbox",
    "zoom",
    "docusign",
    "goto",
    "facebook",
    "linkedin",
    "notion",
    "box",
    "zendesk",
    "okta",
    "auth0",
}
URL_FIELDS = ("authorization_url", "token_url", "revoke_url")
BASE = {"name": "x", "client_id": "id", "client_secret": "s"}


def dummies(preset: presets.Preset) -> dict[str, str]:
    return {placeholder: f"dummy-{placeholder}" for placeholder in preset.placeholders}


def validate(app: dict[str, Any]) -> AppCreate:
    """AppCreate as it stands; "preset" is checked separately while AppCreate lacks the field."""
    fields = dict(app)
    if "preset" not in AppCreate.model_fields:
        fields.pop("preset")
    return AppCreate.model_validate(fields)


def test_all_required_presets_exist() -> None:
    assert set(presets.names()) >= REQUIRED
    assert presets.names() == sorted(presets.names())


@pytest.mark.parametrize("name", presets.names())
def test_preset_makes_a_valid_app(name: str) -> None:
    preset = presets.get(name)
    assert set(preset.values) <= set(AppCreate.model_fields)
    assert set(presets.APP_FIELDS) <= set(AppCreate.model_fields)
    assert preset.values["client_auth"] in get_args(ClientAuth)
    assert preset.title and all(note.strip() for note in preset.notes)
    assert preset.refresh_token_rotates in (True, False, None)

    app = presets.apply(name, dict(BASE), placeholders=dummies(preset))
    assert app["preset"] == name
    for key in URL_FIELDS:
        url = app.get(key)
        if url is None:
            continue
        parts = urlsplit(url)
        assert parts.scheme == "https" and parts.hostname, url
        assert "{" not in url and "}" not in url, url

    model = validate(app)
    assert model.authorization_url == app["authorization_url"]
    assert model.client_auth == preset.values["client_auth"]


@pytest.mark.parametrize("name", presets.names())
def test_placeholders_are_declared_and_used(name: str) -> None:
    preset = presets.get(name)
    urls = " ".join(str(preset.values.get(key)) for key in URL_FIELDS)
    for placeholder in preset.placeholders:
        assert f"{{{placeholder}}}" in urls


def test_given_values_win() -> None:
    app = presets.apply(
        "google",
        {
            **BASE,
            "token_url": "https://example.com/token",
            "revoke_url": None,
            "scopes": ["openid"],
            "pkce": False,
            "authorize_params": {"prompt": "select_account", "hd": "example.com"},
        },
    )
    assert app["token_url"] == "https://example.com/token"
    assert app["revoke_url"] is None
    assert app["scopes"] == ["openid"]
    assert app["pkce"] is False
    # Parameters merge: the given ones over the preset's.
    assert app["authorize_params"] == {
        "access_type": "offline",
        "prompt": "select_account",
        "hd": "example.com",
    }
    assert app["authorization_url"] == "https://accounts.google.com/o/oauth2/v2/auth"
    validate(app)


def test_apply_does_not_change_the_preset() -> None:
    app = presets.apply("dropbox", dict(BASE))
    app["authorize_params"]["token_access_type"] = "online"
    app["scopes"].append("files.content.read")
    again = presets.apply("dropbox", dict(BASE))
    assert again["authorize_params"] == {"token_access_type": "offline"}
    assert again["scopes"] == []


def test_placeholders_are_substituted() -> None:
    app = presets.apply("microsoft", dict(BASE), placeholders={"tenant": "contoso.onmicrosoft.com"})
    assert app["authorization_url"] == (
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/authorize"
    )
    assert app["token_url"].startswith("https://login.microsoftonline.com/contoso.onmicrosoft.com/")
    okta = presets.apply("okta", dict(BASE), placeholders={"domain": "example.okta.com"})
    assert okta["revoke_url"] == "https://example.okta.com/oauth2/v1/revoke"
    zendesk = presets.apply("zendesk", dict(BASE), placeholders={"subdomain": "acme"})
    assert zendesk["token_url"] == "https://acme.zendesk.com/oauth/tokens"


def test_microsoft_tenant_defaults_to_common() -> None:
    app = presets.apply("microsoft", dict(BASE))
    assert app["authorization_url"] == (
        "https://login.microsoftonline.com/common/oauth2/v2.0/authorize"
    )


@pytest.mark.parametrize(("name", "placeholder"), [("okta", "domain"), ("auth0", "domain")])
def test_missing_placeholder_is_named(name: str, placeholder: str) -> None:
    with pytest.raises(ValueError, match=f"preset {name} needs {placeholder}"):
        presets.apply(name, dict(BASE))


@pytest.mark.parametrize(
    ("name", "placeholder", "host"),
    [
        ("zendesk", "subdomain", "{subdomain}.zendesk.com"),
        ("salesforce_mydomain", "mydomain", "{mydomain}.my.salesforce.com"),
    ],
)
def test_a_per_connection_placeholder_left_out_is_asked_of_each_connection(
    name: str, placeholder: str, host: str
) -> None:
    app = presets.apply(name, dict(BASE))
    assert app["connection_settings"] == [placeholder]
    assert urlsplit(app["token_url"]).hostname == host
    assert validate(app).connection_settings == [placeholder]
    # Given, it is filled for the whole app, as before.
    filled = presets.apply(name, dict(BASE), placeholders={placeholder: "acme"})
    assert "connection_settings" not in filled
    assert urlsplit(filled["token_url"]).hostname == host.replace(f"{{{placeholder}}}", "acme")
    assert validate(filled).connection_settings == []


@pytest.mark.parametrize("value", ["evil.com/x?", "a@b", "host:8080", "a#b", "", "-x"])
def test_placeholder_values_cannot_reshape_the_url(value: str) -> None:
    with pytest.raises(ValueError, match="subdomain"):
        presets.apply("zendesk", dict(BASE), placeholders={"subdomain": value})


def test_unknown_placeholder_is_an_error() -> None:
    with pytest.raises(ValueError, match="no placeholder tennant"):
        presets.apply("microsoft", dict(BASE), placeholders={"tennant": "contoso"})


def test_unknown_preset_lists_the_known_ones() -> None:
    with pytest.raises(KeyError, match=r"known presets: .*google"):
        presets.get("gogle")


def test_conflicting_preset_in_given_is_an_error() -> None:
    with pytest.raises(ValueError, match="differs"):
        presets.apply("google", {**BASE, "preset": "github"})
    assert presets.apply("google", {**BASE, "preset": "google"})["preset"] == "google"


def test_documented_quirks() -> None:
    assert presets.get("google").values["authorize_params"] == {
        "access_type": "offline",
        "prompt": "consent",
    }
    assert presets.get("dropbox").values["authorize_params"] == {"token_access_type": "offline"}
    assert presets.get("notion").values["authorize_params"] == {"owner": "user"}
    assert presets.get("atlassian").values["authorize_params"] == {
        "audience": "api.atlassian.com",
        "prompt": "consent",
    }
    assert presets.get("microsoft").values["scopes"] == ["offline_access"]
    assert presets.get("xero").values["scopes"] == ["offline_access"]
    assert presets.get("box").values["refresh_token_lifetime"] == 60 * 86_400
    assert presets.get("xero").values["refresh_token_lifetime"] == 60 * 86_400
    assert presets.get("quickbooks").values["refresh_token_lifetime"] == 100 * 86_400
    assert presets.get("salesforce").values["default_token_lifetime"] == 7200
    assert presets.get("facebook").values["client_auth"] == "query"
    assert presets.get("slack").values["scope_separator"] == ","


# --------------------------------------------------------------------------------------------
# What providers need before they issue refresh tokens
# --------------------------------------------------------------------------------------------


def cause_for(app: dict[str, Any]) -> presets.RefreshTokenCause:
    return presets.refresh_token_cause(
        preset=app.get("preset"),
        authorization_url=app["authorization_url"],
        token_url=app["token_url"],
        authorize_params=app.get("authorize_params") or {},
        scopes=app.get("scopes", []),
    )


@pytest.mark.parametrize("name", presets.names())
def test_a_presets_own_settings_meet_what_its_refresh_tokens_need(name: str) -> None:
    """An app made from a preset, as it is, gets refresh tokens wherever the provider issues
    them; it is matched by its URLs alone too (apps made by hand or before presets)."""
    app = presets.apply(name, dict(BASE), placeholders=dummies(presets.get(name)))
    found = cause_for(app)
    assert found.cause in ("unknown", "provider_without_refresh"), found
    assert (found.cause == "provider_without_refresh") == (
        name in {"facebook", "github", "linkedin"}
    )
    # Without the preset column, by its URLs: the customer's own domain matches nothing, and a
    # variant of a provider (Slack's user tokens) is known by the provider's name.
    customer_domain = {"okta", "auth0"}
    variants = {"slack_user": "slack", "salesforce_mydomain": "salesforce"}
    matched = presets.matching(None, app["token_url"], app["authorization_url"])
    assert matched == (None if name in customer_domain else variants.get(name, name))
    if matched:
        assert cause_for({**app, "preset": None}) == found


@pytest.mark.parametrize(
    ("name", "changes", "cause", "words"),
    [
        ("google", {"authorize_params": {}}, "refresh_not_enabled", "access_type=offline"),
        (
            "google",
            {"authorize_params": {"access_type": "offline"}},
            "issued_once_per_user",
            "https://myaccount.google.com/permissions",
        ),
        ("microsoft", {"scopes": ["User.Read"]}, "refresh_not_enabled", "offline_access scope"),
        (
            "salesforce",
            {"scopes": ["api"]},
            "refresh_not_enabled",
            "refresh_token (or offline_access)",
        ),
        ("salesforce", {"scopes": ["api", "offline_access"]}, "unknown", "once per user"),
        ("dropbox", {"authorize_params": {}}, "refresh_not_enabled", "token_access_type=offline"),
        ("okta", {"scopes": ["openid"]}, "refresh_not_enabled", "Okta issues"),
        ("facebook", {}, "provider_without_refresh", "cannot run unattended"),
    ],
)
def test_what_is_missing_for_refresh_tokens_is_named(
    name: str, changes: dict[str, Any], cause: str, words: str
) -> None:
    app = presets.apply(name, dict(BASE), placeholders=dummies(presets.get(name)))
    app.update(changes)
    found = cause_for(app)
    assert found.cause == cause
    assert words in found.advice


def test_apps_are_matched_by_preset_then_by_host() -> None:
    google_urls = (
        "https://oauth2.googleapis.com/token",
        "https://accounts.google.com/o/oauth2/auth",
    )
    assert presets.matching("dropbox", *google_urls) == "dropbox"  # the app's preset column wins
    assert presets.matching(None, *google_urls) == "google"
    assert presets.matching(None, "https://mycorp.my.salesforce.com/services/oauth2/token") == (
        "salesforce"
    )
    assert presets.matching(None, "https://dev-1.oktapreview.com/oauth2/v1/token") == "okta"
    assert presets.matching(None, "https://acme.zendesk.com/oauth/tokens") == "zendesk"
    assert presets.matching(None, "https://auth.example.com/token", None) is None
    assert presets.matching(None, "https://notgithub.com/login/oauth/access_token") is None
    # A parameter fixed in the authorization URL counts as an authorize parameter.
    fixed = presets.refresh_token_cause(
        preset=None,
        authorization_url="https://accounts.google.com/o/oauth2/v2/auth?access_type=offline&prompt=consent",
        token_url="https://oauth2.googleapis.com/token",
        authorize_params={},
        scopes=[],
    )
    assert fixed.cause == "unknown"


def test_a_misspelt_refresh_token_need_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = {"x": {"title": "X", "refresh_token_needs": {"scopes": ["offline_access"]}}}
    monkeypatch.setattr(presets.json, "loads", lambda _: broken)
    presets._load.cache_clear()
    try:
        with pytest.raises(ValueError, match=r"x refresh_token_needs has \['scopes'\]"):
            presets.names()
    finally:
        monkeypatch.undo()
        presets._load.cache_clear()
        presets._domains.cache_clear()


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ({"token_url": "https://id.example.com/{t}/token"}, "first label of the URL's host"),
        ({"token_url": "https://{t}.example/token"}, "at least 2"),
        ({"token_url": "https://{t}.{u}.example.com/token"}, "fixed names"),
        (
            {"token_url": "https://{t}.example.com/token", "placeholder_defaults": {"t": "x"}},
            "default",
        ),
        (
            {"token_url": "https://x.example.com/token", "per_connection": ["u"]},
            "not a placeholder",
        ),
    ],
)
def test_a_per_connection_placeholder_must_stay_inside_a_fixed_host(
    monkeypatch: pytest.MonkeyPatch, entry: dict[str, Any], words: str
) -> None:
    """Whoever starts a connection fills it, so it can only pick a host under the preset's
    domain: checked when the presets load, like the rest of the file."""
    placeholders = sorted(connection_settings.placeholders_in(entry["token_url"]))
    broken = {
        "x": {
            "title": "X",
            "authorization_url": "https://login.example.com/authorize",
            "placeholders": placeholders,
            "per_connection": ["t"],
            **entry,
        }
    }
    monkeypatch.setattr(presets.json, "loads", lambda _: broken)
    presets._load.cache_clear()
    try:
        with pytest.raises(ValueError, match=words):
            presets.names()
    finally:
        monkeypatch.undo()
        presets._load.cache_clear()
        presets._domains.cache_clear()
