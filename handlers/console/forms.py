"""HTML form fields to the API's models and back: the console validates with the same pydantic
models as the API (AppCreate, AppUpdate, BasicCredentialIn, ConnectionStart), so a value the API
refuses is refused here with the same words, shown next to its field."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from authbroker.schemas import AppCreate, field_errors

SECRET_FIELDS = frozenset({"client_secret", "password", "key"})
TEXT_FIELDS = ("name", "client_id", "authorization_url", "token_url", "revoke_url", "probe_url")
OPTIONAL_TEXT = frozenset({"revoke_url", "probe_url"})
INT_FIELDS = (
    "refresh_margin",
    "default_token_lifetime",
    "refresh_token_lifetime",
    "probe_interval",
)
OPTIONAL_INT = frozenset({"default_token_lifetime", "refresh_token_lifetime", "probe_interval"})
PARAM_FIELDS = ("authorize_params", "token_params")
CLIENT_AUTH = ("body", "basic", "query", "auto")
SEPARATORS = {" ": "space", ",": "comma", "+": "plus"}

FRIENDLY = {
    "String should have at least 1 character": "Required.",
    "Field required": "Required.",
}
NAME_HINT = "Use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit."


def raw(form: Mapping[str, Any]) -> dict[str, str]:
    """The submitted text of each field, secrets left out (they are never sent back)."""
    return {str(k): str(v) for k, v in form.items() if k not in SECRET_FIELDS and k != "csrf"}


def scopes_text(scopes: list[str] | None) -> str:
    return " ".join(scopes or [])


def params_text(params: Mapping[str, str] | None) -> str:
    return "\n".join(f"{k}={v}" for k, v in (params or {}).items())


def app_form_values(values: Mapping[str, Any]) -> dict[str, str]:
    """An app's (or a preset's) settings as the form shows them."""
    out: dict[str, str] = {}
    for name in TEXT_FIELDS:
        if values.get(name) is not None:
            out[name] = str(values[name])
    for name in INT_FIELDS:
        if values.get(name) is not None:
            out[name] = str(values[name])
    out["scopes"] = scopes_text(values.get("scopes"))
    for name in PARAM_FIELDS:
        out[name] = params_text(values.get(name))
    out["client_auth"] = str(values.get("client_auth") or "body")
    out["scope_separator"] = str(values.get("scope_separator") or " ")
    out["pkce"] = "on" if values.get("pkce", True) else ""
    out.setdefault("refresh_margin", "300")
    return out


def _params(text: str, field: str, errors: dict[str, str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            errors[field] = f"Line {number}: write one name=value per line."
            continue
        params[key.strip()] = value.strip()
    return params


def parse_app_form(form: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Every app field the form carries, as the models take it, and the errors found before
    validation (a params line without `=`). Empty optional fields are None."""
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name in TEXT_FIELDS:
        if name in form:
            text = str(form[name]).strip()
            values[name] = None if (name in OPTIONAL_TEXT and not text) else text
    secret = str(form.get("client_secret", ""))
    if secret:
        values["client_secret"] = secret
    if "scopes" in form:
        values["scopes"] = str(form["scopes"]).split()
    if "scope_separator" in form:
        values["scope_separator"] = str(form["scope_separator"]) or " "
    if "client_auth" in form:
        values["client_auth"] = str(form["client_auth"])
    for name in PARAM_FIELDS:
        if name in form:
            values[name] = _params(str(form[name]), name, errors)
    values["pkce"] = str(form.get("pkce", "")) == "on"
    for name in INT_FIELDS:
        if name not in form:
            continue
        text = str(form[name]).strip()
        if not text:
            if name in OPTIONAL_INT:
                values[name] = None
            continue
        try:
            values[name] = int(text)
        except ValueError:
            errors[name] = "Enter a whole number."
    return values, errors


def error_map(exc: ValidationError) -> dict[str, str]:
    """`{field: message}` with the message the API would give, a little friendlier."""
    errors: dict[str, str] = {}
    for item in field_errors(exc):
        field = item["field"].split(".")[0]
        message = FRIENDLY.get(item["message"], item["message"])
        if field == "name" and message.startswith("String should match pattern"):
            message = NAME_HINT
        if field == "connection_id" and message.startswith("String should match pattern"):
            message = (
                "Use letters, digits and . _ : @ - (up to 128), starting with a letter or digit."
            )
        if field == "scopes" and message.startswith("String should match pattern"):
            message = "A scope may not contain spaces, quotes or backslashes."
        message = message[:1].upper() + message[1:]
        errors.setdefault(field, message if message.endswith(".") else message + ".")
    return errors


def validate(
    model: type[BaseModel], data: dict[str, Any], **context: Any
) -> tuple[BaseModel | None, dict[str, str]]:
    try:
        return model.model_validate(data, context=context), {}
    except ValidationError as exc:
        return None, error_map(exc)


def create_payload(values: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """What AppCreate validates (defaults for empty optional settings), and the space
    separator kept aside: the schema strips whitespace, so a " " separator cannot pass through
    it; it is the default, and the only blank one."""
    data = {k: v for k, v in values.items() if v is not None}
    separator = data.pop("scope_separator", None)
    if separator and separator.strip():
        data["scope_separator"] = separator
        separator = None
    return data, separator


def app_create_model_has(field: str) -> bool:
    return field in AppCreate.model_fields
