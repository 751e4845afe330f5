"""Benchmarks of veza-ops (not tests): see bench/README.md."""
