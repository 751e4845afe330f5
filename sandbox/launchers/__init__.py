"""Launchers of the real programs the sandbox runs: PostgreSQL, Prometheus, moto, Prefect, gpg."""
