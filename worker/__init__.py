"""The background side (arq): exchange, refresh, revoke, scheduling, event relay."""
