"""The HTTP edge (aiohttp): callback, connect, API, auth, health."""
