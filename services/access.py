"""Who is asking and what they may reach: the caller of a use case, and the refusals that say
which role lacks what.

The role's permissions are `authbroker.roles`; a runtime key may also be limited to some apps
(`apps`), which limits the connections it sees and reads to those apps' and the Basic
credentials it reads to those names. Refusals are `Forbidden` (403 `forbidden`), naming the
key, its role and what it lacks, never a 404 that would hide from an admin that the route
exists.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from authbroker.roles import Permission, Role, allows, roles_allowed
from services.errors import Forbidden
from storage.api_keys import ApiKey


@dataclass(frozen=True)
class Caller:
    """An API key as a use case sees it. `apps` None: it reaches every app."""

    key_id: str
    name: str
    role: Role
    apps: frozenset[str] | None = None

    @classmethod
    def of(cls, key: ApiKey) -> Caller:
        return cls(
            key_id=key.id,
            name=key.name,
            role=Role(key.role),
            apps=frozenset(key.apps) if key.apps is not None else None,
        )

    @property
    def label(self) -> str:
        return f"API key {self.name!r} ({self.role} role)"

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    def reaches(self, name: str) -> bool:
        """Whether an app (or Basic credential) of this name is within the key's reach."""
        return self.apps is None or name in self.apps

    def limited_to(self, wanted: Iterable[str]) -> list[str] | None:
        """The app names a listing may show: those asked for (each must be within reach), or
        every app the key is limited to; None: no limit."""
        asked = list(dict.fromkeys(wanted))
        for name in asked:
            require_app(self, name)
        if asked or self.apps is None:
            return asked or None
        return sorted(self.apps)


def require(caller: Caller, permission: Permission | None) -> None:
    """`Forbidden` unless the caller's role has `permission` (None: admin keys only)."""
    if permission is None:
        if not caller.is_admin:
            raise Forbidden("forbidden", f"{caller.label} may not do this: admin keys only")
        return
    if not allows(caller.role, permission):
        allowed = ", ".join(roles_allowed(permission))
        raise Forbidden(
            "forbidden",
            f"{caller.label} may not {permission.doing} ({permission}); roles allowed: {allowed}",
        )


def require_app(caller: Caller, app: str, *, what: str = "app") -> None:
    """`Forbidden` unless the caller reaches `app` (without saying which apps exist)."""
    if not caller.reaches(app):
        reach = ", ".join(sorted(caller.apps or ())) or "no app"
        raise Forbidden(
            "forbidden",
            f"{caller.label} is limited to {reach}; this {what} is not among them",
        )
