"""Names the store and the artifacts are keyed by: database names checked, artifact keys built."""

from __future__ import annotations

import hashlib
import re

from errors import InvalidInputError


def check_database_name(database: str, *, field: str = "database") -> None:
    """Refuse a database name that cannot be one key segment (before anything is written).

    Args:
        database: the name.
        field: the input it came from, for the error.

    Raises:
        InvalidInputError: empty, ``.``/``..``, or containing ``/`` or a control character.
    """
    if database in ("", ".", "..") or "/" in database or not database.isprintable():
        raise InvalidInputError(
            field, f"{database!r} cannot be a key segment of the backup store",
            fix="use a database name without '/' or control characters (not '.' or '..')",
        )


def artifact_key(*parts: str) -> str:
    """Build a valid artifact key (lowercase letters, digits, dashes) from free text.

    When the slug lost anything (case, ``_``, length) a short hash of the text is appended:
    names differing only there (``veza-db``, ``veza_db``) never share a key.

    Args:
        parts: pieces joined by dashes, e.g. ("prune-backups", "veza_db"); empty ones skipped.

    Returns:
        For example ``prune-backups-veza-db-1a2b3c4d`` (at most 100 characters).
    """
    text = "-".join(p for p in parts if p)
    slug = re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9-]", "-", text.lower())).strip("-")
    if slug == text and len(slug) <= 100:
        return slug or "backups"
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{slug[:91].rstrip('-') or 'backups'}-{digest}"
