"""Keeping what we sent out of what we say: provider text is cleaned of every secret a request
carried (secrets, codes, tokens, client assertions) before any of it is kept."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, quote_plus

from authbroker.oauth.client_auth import basic_credentials
from authbroker.oauth.model import Client, ParamValue

__all__ = ["SECRET_PARAMS", "Redactor"]

SECRET_PARAMS = frozenset(
    {
        "code",
        "code_verifier",
        "refresh_token",
        "client_secret",
        "token",
        "assertion",
        "client_assertion",
        "password",
        "subject_token",
        "actor_token",
        "fb_exchange_token",
    }
)
_REDACTED = "[redacted]"
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]+")


@dataclass(frozen=True)
class Redactor:
    """Cleans provider text of every secret we sent, in the forms a provider might echo it."""

    secrets: tuple[str, ...] = field(repr=False)

    @classmethod
    def for_request(cls, client: Client, params: Mapping[str, ParamValue]) -> Redactor:
        sent = [s for s in (client.client_secret, *client.previous_secrets) if s]
        values = [*sent, *(basic_credentials(client.client_id, s) for s in sent)]
        for key, value in params.items():
            if key in SECRET_PARAMS:
                values += [value] if isinstance(value, str) else list(value)
        return cls(()).including(values)

    def including(self, values: Iterable[str]) -> Redactor:
        """This redactor, also cleaning `values` (what one attempt added, e.g. its assertion)."""
        forms = set(self.secrets)
        forms.update(form for value in values if value for form in _encoded_forms(value))
        return Redactor(tuple(sorted(forms, key=len, reverse=True)))

    def clean(self, text: str, limit: int) -> str:
        """Also storable: control characters (NUL among them) become spaces, lone surrogates
        (a JSON `\\ud800`) question marks."""
        for secret in self.secrets:
            text = text.replace(secret, _REDACTED)
        text = text.encode("utf-8", "replace").decode("utf-8")
        text = _CONTROL_CHARS.sub(" ", text).strip()
        return text if len(text) <= limit else text[: limit - 1] + "…"


def _encoded_forms(value: str) -> set[str]:
    return {value, quote_plus(value), quote(value, safe="")}
