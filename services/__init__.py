"""The use cases: what authbroker does, between its edges and its storage.

The HTTP API, the console, the CLI and the workers only translate: they parse what comes in,
call a use case here, and render what comes back or the `services.errors.DomainError` it
raised. A use case takes and returns plain data, decides each state transition and the event
that tells of it in one place, and leaves every SQL statement to `storage/`.

Imports point inward: `handlers` and `worker` use `services`; `services` uses `storage` and the
core (`authbroker`); nothing here imports aiohttp's web side, arq's worker or the CLI.
"""
