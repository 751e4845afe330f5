"""Plain functions and Prefect tasks that make veza-ops' decisions and do its work."""
