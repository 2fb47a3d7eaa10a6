"""What each role of API key may do: the one table every edge reads.

An API key has one role. `admin` may do everything; `operator` runs apps and connections but
never reads a token or a password; `runtime` gets credentials and follows their health, and
touches nothing that changes an app. Routes name the permission they need (on their
`handlers.operations.operation`), the API's middleware checks it here, and `/openapi.json` lists
each operation's allowed roles from the same table.
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    ADMIN = "admin"
    OPERATOR = "operator"
    RUNTIME = "runtime"


class Permission(StrEnum):
    """What a request does, as a role is granted it. The value names it in refusals."""

    APPS_READ = "apps.read"
    APPS_WRITE = "apps.write"
    CONNECTIONS_READ = "connections.read"
    CONNECTIONS_WRITE = "connections.write"
    CONNECTIONS_REFRESH = "connections.refresh"
    CONNECT_LINKS = "connect_links"
    CREDENTIALS_READ = "credentials.read"
    BASIC_READ = "basic.read"
    BASIC_WRITE = "basic.write"
    DIAGNOSIS = "diagnosis"
    EVENTS = "events"
    WEBHOOKS = "webhooks"
    AUDIT = "audit"
    API_KEYS = "api_keys"

    @property
    def doing(self) -> str:
        """The permission as words for a refusal: "… may not {doing}"."""
        return _DOING[self]


_DOING = {
    Permission.APPS_READ: "read apps",
    Permission.APPS_WRITE: "create, change or delete apps",
    Permission.CONNECTIONS_READ: "read connections",
    Permission.CONNECTIONS_WRITE: "start authorizations or delete connections",
    Permission.CONNECTIONS_REFRESH: "refresh connections or report on their tokens",
    Permission.CONNECT_LINKS: "make connect links",
    Permission.CREDENTIALS_READ: "read credentials (tokens and passwords)",
    Permission.BASIC_READ: "list Basic credentials",
    Permission.BASIC_WRITE: "set or delete Basic credentials",
    Permission.DIAGNOSIS: "run diagnoses",
    Permission.EVENTS: "follow events",
    Permission.WEBHOOKS: "manage webhook subscriptions",
    Permission.AUDIT: "read the credential audit",
    Permission.API_KEYS: "manage API keys",
}

GRANTS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(Permission),
    Role.OPERATOR: frozenset(Permission) - {Permission.CREDENTIALS_READ, Permission.API_KEYS},
    Role.RUNTIME: frozenset(
        {
            Permission.CONNECTIONS_READ,
            Permission.CONNECTIONS_REFRESH,
            Permission.CONNECT_LINKS,
            Permission.CREDENTIALS_READ,
            Permission.EVENTS,
        }
    ),
}

# Roles a key may be limited to some apps with (`--app NAME`): the others reach every app.
APP_LIMITED = frozenset({Role.RUNTIME})


def allows(role: Role, permission: Permission) -> bool:
    return permission in GRANTS[role]


def roles_allowed(permission: Permission) -> list[Role]:
    """The roles granted `permission`, most powerful first."""
    return [role for role in Role if allows(role, permission)]
