"""The Vault emulator: the HTTP API (KV v2, token and AppRole auth, seal) that hvac speaks."""
