"""Postgres: the pool, the migrations, the repositories and sealing of secrets at rest."""
