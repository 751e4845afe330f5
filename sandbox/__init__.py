"""Local stand-ins and launchers for the systems veza-ops talks to (tests and demo only)."""
