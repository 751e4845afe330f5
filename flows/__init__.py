"""Prefect flows: they only put tasks in order."""
