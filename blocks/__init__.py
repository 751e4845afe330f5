"""Prefect blocks: configuration of external systems, each handing out its client."""
