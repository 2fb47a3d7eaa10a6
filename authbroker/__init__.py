"""authbroker: keeps integrations authenticated.

The core: settings, logging, the OAuth protocol, problems, the event schema and the CLI. It
imports nothing from `handlers`, `worker` or `storage`; they build on it.
"""

__version__ = "0.1.0"
