"""Recovery tasks: backups, the catalogue, retention, fetching, restores and restore tests."""
