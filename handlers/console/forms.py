"""HTML form fields to the API's models and back: the console validates with the same pydantic
models as the API (AppCreate, AppUpdate, BasicCredentialIn, ConnectionStart), so a value the API
refuses is refused here with the same words, shown next to its field. An app's settings are read
and shown by the form kind each declares on its AppCreate field (`authbroker.schemas.Setting`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from authbroker import connection_settings, text
from authbroker.schemas import APP_SETTINGS, AppCreate, FormKind, default_of, field_errors
from services.errors import DomainError

SETTING = "setting_"
"""The connect form's field of a connection setting: `setting_subdomain`."""

SECRET_FIELDS = frozenset({"client_secret", "password", "key"})
CLIENT_AUTH: tuple[str, ...] = get_args(APP_SETTINGS["client_auth"][0].annotation)
SEPARATORS = {" ": "space", ",": "comma", "+": "plus"}
PARAM_FIELDS = tuple(name for name, (_, s) in APP_SETTINGS.items() if s.form == "params")
# What the form shows for a setting left out: the model's default (secrets are never shown).
DEFAULTS: dict[str, Any] = {
    name: default_of(info)
    for name, (info, setting) in APP_SETTINGS.items()
    if setting.form not in {"secret", "secrets"} and default_of(info) is not None
}

FRIENDLY = {
    "String should have at least 1 character": "Required.",
    "Field required": "Required.",
}
NAME_HINT = "Use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit."


def form_flaw(form: Mapping[str, Any]) -> str | None:
    """What is wrong with a posted form that no field's validation would say: a name or a
    value storage could not keep (`authbroker.text`), named for the page."""
    for key, value in form.items():
        why = text.flaw(str(key))
        if why:
            return f"A field name {why}."
        why = text.flaw(value) if isinstance(value, str) else None
        if why:
            return f"The field {key!r} {why}."
    return None


def raw(form: Mapping[str, Any]) -> dict[str, str]:
    """The submitted text of each field, secrets left out (they are never sent back)."""
    return {str(k): str(v) for k, v in form.items() if k not in SECRET_FIELDS and k != "csrf"}


def _shown(kind: FormKind, value: Any) -> str | None:
    """A setting's value as its form field holds it; None: the field starts empty."""
    if kind in {"secret", "secrets"}:
        return None
    if kind == "scopes":
        return " ".join(value or [])
    if kind == "params":
        return "\n".join(f"{k}={v}" for k, v in (value or {}).items())
    if kind == "check":
        return "on" if value else ""
    return None if value is None else str(value)


def app_form_values(values: Mapping[str, Any]) -> dict[str, str]:
    """An app's (or a preset's) settings as the form shows them."""
    out = {"name": str(values["name"])} if values.get("name") is not None else {}
    for name, (_, setting) in APP_SETTINGS.items():
        value = values.get(name)
        shown = _shown(setting.form, DEFAULTS.get(name) if value is None else value)
        if shown is not None:
            out[name] = shown
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
    validation (a params line without `=`, a number that is not one). Empty optional fields
    are None; an unticked checkbox is absent from a form, so it is read as off."""
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    if "name" in form:
        values["name"] = str(form["name"]).strip()
    for name, (info, setting) in APP_SETTINGS.items():
        text = str(form.get(name, ""))
        optional = info.default is None
        if setting.form == "check":
            values[name] = text == "on"
        elif setting.form == "secret":
            if text:
                values[name] = text
        elif name not in form or setting.form == "secrets":
            continue
        elif setting.form == "text":
            values[name] = None if optional and not text.strip() else text.strip()
        elif setting.form == "scopes":
            values[name] = text.split()
        elif setting.form == "params":
            values[name] = _params(text, name, errors)
        elif setting.form == "separator":
            values[name] = text or DEFAULTS[name]
        elif setting.form == "choice":
            values[name] = text
        elif not text.strip():  # a number left empty
            if optional:
                values[name] = None
        else:
            try:
                values[name] = int(text.strip())
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


def start_body(
    form: Mapping[str, Any],
    names: Sequence[str],
    *,
    texts: Sequence[str] = ("connection_id",),
    lists: Sequence[str] = ("scopes",),
) -> tuple[dict[str, str], dict[str, Any]]:
    """A form that starts a connection (connect, service connection, connect link) as it is
    shown again and as the API's body takes it: `texts` stripped, `lists` split on white space,
    empty ones left out, then the values of the app's connection settings `names`."""
    fields = (*texts, *lists, *(SETTING + n for n in names))
    shown = {k: str(form.get(k, "")) for k in fields}
    body: dict[str, Any] = {k: shown[k].strip() for k in texts if shown[k].strip()}
    body |= {k: shown[k].split() for k in lists if shown[k].strip()}
    body.update(settings_given(names, shown))
    return shown, body


def settings_given(names: Sequence[str], shown: Mapping[str, str]) -> dict[str, Any]:
    """The `settings` of a connect form: a field per connection setting of the app. All left
    empty: none (an existing connection keeps its own; "Authorize again" buttons send none)."""
    given = {n: str(shown.get(SETTING + n, "")).strip() for n in names}
    return {"settings": {n: v for n, v in given.items() if v}} if any(given.values()) else {}


def start_errors(exc: DomainError) -> dict[str, str]:
    """A refused start as the connect form shows it: the message on top, and each setting at
    fault (`settings.NAME`) beside its field."""
    errors = {"connect": exc.message}
    for item in exc.details.get("fields", []):
        name = item["field"].removeprefix(f"{connection_settings.FIELD}.")
        if item["field"] != name:
            errors.setdefault(SETTING + name, item["message"][:1].upper() + item["message"][1:])
    return errors
