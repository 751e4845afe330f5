"""Tests of the Kubernetes API emulator."""
