"""State of the Vault emulator: tokens, AppRole, seal, KV v2 secrets, persisted to one JSON file."""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

JSON = dict[str, Any]
DEFAULT_MAX_VERSIONS = 10
APPROLE_NAME = "veza-ops"


class VaultHTTPError(Exception):
    """An error answered as ``{"errors": [...]}`` (or ``body`` when given) with ``status``."""

    def __init__(self, status: int, *errors: str, body: JSON | None = None) -> None:
        self.status = status
        self.errors = list(errors)
        self.body = body if body is not None else {"errors": self.errors}
        super().__init__(f"{status}: {'; '.join(errors)}")


def now_iso(at: float | None = None) -> str:
    """Format a timestamp the way Vault does (RFC 3339, UTC, ``Z``).

    Args:
        at: epoch seconds (now when None).

    Returns:
        e.g. ``2026-11-27T09:40:01.123456Z``.
    """
    moment = datetime.fromtimestamp(time.time() if at is None else at, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_ttl(value: object, *, field: str = "ttl") -> int:
    """Parse a Vault duration (``3600``, ``"90s"``, ``"30m"``, ``"1h"``, ``"2d"``) to seconds.

    Args:
        value: the duration.
        field: name used in the error.

    Returns:
        Seconds.

    Raises:
        VaultHTTPError: 400 when the value is not a duration.
    """
    if value is None or value == "":
        return 0
    if isinstance(value, int | float):
        return int(value)
    text = str(value).strip()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if text[-1] in units:
            return int(float(text[:-1]) * units[text[-1]])
        return int(text)
    except (ValueError, IndexError):
        raise VaultHTTPError(400, f"invalid {field} {text!r}: use seconds or 30s/5m/1h") from None


def _blank_state() -> JSON:
    return {
        "root_token": "hvs." + secrets.token_urlsafe(24),
        "unseal_key": secrets.token_hex(32),
        "sealed": False,
        "tokens": {},
        "approle": {
            APPROLE_NAME: {
                "role_id": str(uuid.uuid4()),
                "secret_ids": [str(uuid.uuid4())],
                "token_ttl": 3600,
                "policies": ["default", APPROLE_NAME],
            }
        },
        "mounts": {"secret": {"config": {"max_versions": 0, "cas_required": False}, "data": {}}},
    }


class VaultState:
    """Everything the emulator knows, guarded by one lock and saved after every change."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.lock = threading.RLock()
        if self.path.exists():
            self.data: JSON = json.loads(self.path.read_text())
        else:
            self.data = _blank_state()
            self.save()
        root = self.data["root_token"]
        self.data["tokens"].setdefault(root, self._token_record("root", ["root"], 0, "token/root"))

    def save(self) -> None:
        """Write the state atomically (mode 0600: it holds tokens and secrets)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(self.data, out, indent=1, sort_keys=True)
        os.replace(tmp, self.path)

    # --- tokens ----------------------------------------------------------------------

    @staticmethod
    def _token_record(display: str, policies: list[str], ttl: int, path: str) -> JSON:
        created = time.time()
        return {
            "accessor": secrets.token_urlsafe(18),
            "display_name": display,
            "policies": sorted(set(policies)),
            "creation_ttl": ttl,
            "creation_time": int(created),
            "expire": created + ttl if ttl else None,
            "path": path,
            "meta": None,
        }

    def new_token(self, display: str, policies: list[str], ttl: int, path: str) -> tuple[str, JSON]:
        """Mint a token.

        Args:
            display: display name.
            policies: policy names (recorded, not enforced).
            ttl: seconds, 0 for no expiry.
            path: the auth path that created it.

        Returns:
            The token and its record.
        """
        token = "hvs." + secrets.token_urlsafe(24)
        record = self._token_record(display, policies, ttl, path)
        with self.lock:
            self.data["tokens"][token] = record
            self.save()
        return token, record

    def check_token(self, token: str | None) -> JSON:
        """Return the record of a valid token.

        Args:
            token: the client token from the request.

        Returns:
            Its record.

        Raises:
            VaultHTTPError: 403 permission denied when missing, unknown or expired.
        """
        record = self.data["tokens"].get(token) if token else None
        if record is None or (record["expire"] is not None and record["expire"] < time.time()):
            raise VaultHTTPError(403, "permission denied")
        return dict(record)

    def auth_block(self, token: str, record: JSON) -> JSON:
        """The ``auth`` object of a login or token-create answer.

        Args:
            token: the client token.
            record: its record.

        Returns:
            Vault's auth block.
        """
        return {
            "client_token": token,
            "accessor": record["accessor"],
            "policies": record["policies"],
            "token_policies": record["policies"],
            "metadata": record["meta"],
            "lease_duration": record["creation_ttl"],
            "renewable": bool(record["creation_ttl"]),
            "entity_id": "",
            "token_type": "service",
            "orphan": record["path"] != "auth/token/create",
        }

    def lookup(self, token: str, record: JSON) -> JSON:
        """The ``data`` of ``auth/token/lookup-self``.

        Args:
            token: the client token.
            record: its record.

        Returns:
            Vault's lookup data.
        """
        expire = record["expire"]
        return {
            "accessor": record["accessor"],
            "creation_time": record["creation_time"],
            "creation_ttl": record["creation_ttl"],
            "display_name": record["display_name"],
            "entity_id": "",
            "expire_time": None if expire is None else now_iso(expire),
            "explicit_max_ttl": 0,
            "id": token,
            "meta": record["meta"],
            "num_uses": 0,
            "orphan": record["path"] != "auth/token/create",
            "path": record["path"],
            "policies": record["policies"],
            "renewable": bool(record["creation_ttl"]),
            "ttl": 0 if expire is None else max(0, int(expire - time.time())),
            "type": "service",
        }

    def renew(self, token: str, increment: int) -> JSON:
        """Push a token's expiry forward.

        Args:
            token: the client token.
            increment: seconds (the creation TTL when 0).

        Returns:
            The updated record.
        """
        with self.lock:
            record = self.data["tokens"][token]
            if record["expire"] is not None:
                record["expire"] = time.time() + (increment or record["creation_ttl"])
                self.save()
            return dict(record)

    def revoke(self, token: str) -> None:
        """Forget a token (the root token cannot be revoked here).

        Args:
            token: the client token.
        """
        with self.lock:
            if token != self.data["root_token"]:
                self.data["tokens"].pop(token, None)
                self.save()

    # --- seal ------------------------------------------------------------------------

    def seal_status(self) -> JSON:
        """The body of ``sys/seal-status`` and ``sys/unseal``.

        Returns:
            Vault's seal status.
        """
        return {
            "type": "shamir",
            "initialized": True,
            "sealed": bool(self.data["sealed"]),
            "t": 1,
            "n": 1,
            "progress": 0,
            "nonce": "",
            "version": "1.15.0+sandbox",
            "build_date": "2026-01-01T00:00:00Z",
            "migration": False,
            "recovery_seal": False,
            "storage_type": "file",
            "cluster_name": "vault-sandbox",
            "cluster_id": "00000000-0000-0000-0000-000000000000",
        }

    def set_sealed(self, sealed: bool) -> None:
        """Seal or unseal.

        Args:
            sealed: the new state.
        """
        with self.lock:
            self.data["sealed"] = sealed
            self.save()

    # --- AppRole ---------------------------------------------------------------------

    def approle_login(self, role_id: str, secret_id: str) -> tuple[str, JSON]:
        """Exchange role_id + secret_id for a token.

        Args:
            role_id: the role's id.
            secret_id: one of its secret ids.

        Returns:
            The token and its record.

        Raises:
            VaultHTTPError: 400 invalid role or secret ID, like Vault.
        """
        for name, role in self.data["approle"].items():
            if secrets.compare_digest(role["role_id"], role_id or ""):
                if any(secrets.compare_digest(s, secret_id or "") for s in role["secret_ids"]):
                    return self.new_token(
                        f"approle-{name}", role["policies"], role["token_ttl"], "auth/approle/login"
                    )
                break
        raise VaultHTTPError(400, "invalid role or secret ID")

    def role(self, name: str) -> JSON:
        """Return an AppRole role.

        Args:
            name: role name.

        Returns:
            The role record.

        Raises:
            VaultHTTPError: 404 when there is no such role.
        """
        role = self.data["approle"].get(name)
        if role is None:
            raise VaultHTTPError(404, f"role {name!r} does not exist")
        return dict(role)

    def new_secret_id(self, name: str) -> str:
        """Generate one more secret id for a role.

        Args:
            name: role name.

        Returns:
            The secret id.
        """
        self.role(name)
        secret_id = str(uuid.uuid4())
        with self.lock:
            self.data["approle"][name]["secret_ids"].append(secret_id)
            self.save()
        return secret_id
