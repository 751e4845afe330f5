"""The release half: catalogue, build, secrets, staging, blue-green production and rollback."""
