"""A Kubernetes API emulator for the sandbox: object store, HTTP API server and launcher."""
