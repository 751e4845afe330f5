"""KV version 2 secrets engine of the Vault emulator: versions, check-and-set, metadata, lists."""

from __future__ import annotations

import time
from typing import Any

from sandbox.vault.state import DEFAULT_MAX_VERSIONS, JSON, VaultHTTPError, VaultState, now_iso


class KV2:
    """Operations of one KV v2 mount, on the shared :class:`VaultState`."""

    def __init__(self, state: VaultState, mount: str) -> None:
        self.state = state
        self.mount = mount
        if mount not in state.data["mounts"]:
            raise VaultHTTPError(404, f"no handler for route '{mount}'")

    @property
    def _root(self) -> JSON:
        return self.state.data["mounts"][self.mount]  # type: ignore[no-any-return]

    @property
    def _secrets(self) -> dict[str, JSON]:
        return self._root["data"]  # type: ignore[no-any-return]

    def _entry(self, path: str) -> JSON:
        entry = self._secrets.get(path)
        if entry is None:
            raise VaultHTTPError(404)
        return entry

    @staticmethod
    def _version_meta(entry: JSON, number: int) -> JSON:
        version = entry["versions"][str(number)]
        return {
            "created_time": version["created_time"],
            "custom_metadata": entry["custom_metadata"],
            "deletion_time": version["deletion_time"],
            "destroyed": version["destroyed"],
            "version": number,
        }

    # --- config ----------------------------------------------------------------------

    def read_config(self) -> JSON:
        """Mount configuration.

        Returns:
            ``max_versions``, ``cas_required``, ``delete_version_after``.
        """
        config = dict(self._root["config"])
        config.setdefault("delete_version_after", "0s")
        return config

    def write_config(self, body: JSON) -> None:
        """Update the mount configuration.

        Args:
            body: ``max_versions``, ``cas_required``.
        """
        with self.state.lock:
            config = self._root["config"]
            if "max_versions" in body:
                config["max_versions"] = int(body["max_versions"])
            if "cas_required" in body:
                config["cas_required"] = bool(body["cas_required"])
            self.state.save()

    # --- data ------------------------------------------------------------------------

    def write(self, path: str, body: JSON) -> JSON:
        """Create a new version of ``path``.

        Args:
            path: secret path.
            body: ``{"data": {...}, "options": {"cas": N}}``.

        Returns:
            The new version's metadata.

        Raises:
            VaultHTTPError: 400 on missing data or a check-and-set mismatch.
        """
        data = body.get("data")
        if not isinstance(data, dict):
            raise VaultHTTPError(400, "no data provided")
        cas = (body.get("options") or {}).get("cas")
        with self.state.lock:
            entry = self._secrets.get(path)
            current = entry["current_version"] if entry else 0
            cas_required = self._root["config"].get("cas_required") or (
                entry is not None and entry["cas_required"]
            )
            if cas is None and cas_required:
                raise VaultHTTPError(400, "check-and-set parameter required for this call")
            if cas is not None and int(cas) != current:
                raise VaultHTTPError(
                    400, "check-and-set parameter did not match the current version"
                )
            stamp = now_iso()
            if entry is None:
                entry = self._new_entry(stamp)
                self._secrets[path] = entry
            number = current + 1
            entry["versions"][str(number)] = {
                "data": data,
                "created_time": stamp,
                "deletion_time": "",
                "destroyed": False,
            }
            entry["current_version"] = number
            entry["updated_time"] = stamp
            self._trim(entry)
            self.state.save()
            return self._version_meta(entry, number)

    def patch(self, path: str, body: JSON) -> JSON:
        """Merge ``body["data"]`` into the current version (JSON merge patch) as a new version.

        Args:
            path: secret path.
            body: ``{"data": {...}, "options": {"cas": N}}``.

        Returns:
            The new version's metadata.
        """
        with self.state.lock:
            current = self.read(path, None)["data"]
            merged = dict(current)
            for key, value in (body.get("data") or {}).items():
                if value is None:
                    merged.pop(key, None)
                else:
                    merged[key] = value
            return self.write(path, {"data": merged, "options": body.get("options") or {}})

    def read(self, path: str, version: int | None) -> JSON:
        """Read one version (the current one by default).

        Args:
            path: secret path.
            version: version number or None/0 for the current one.

        Returns:
            ``{"data": ..., "metadata": ...}``.

        Raises:
            VaultHTTPError: 404 when missing; 404 with metadata when deleted or destroyed.
        """
        entry = self._entry(path)
        number = version or entry["current_version"]
        stored = entry["versions"].get(str(number))
        if stored is None:
            raise VaultHTTPError(404)
        meta = self._version_meta(entry, number)
        if stored["deletion_time"] or stored["destroyed"]:
            raise VaultHTTPError(404, body={"errors": [], "data": {"data": None, "metadata": meta}})
        return {"data": dict(stored["data"]), "metadata": meta}

    def delete_versions(self, path: str, versions: list[int] | None, *, mode: str) -> None:
        """Soft-delete, undelete or destroy versions (the current one when ``versions`` is None).

        Args:
            path: secret path.
            versions: version numbers.
            mode: ``delete``, ``undelete`` or ``destroy``.
        """
        with self.state.lock:
            entry = self._secrets.get(path)
            if entry is None:
                return
            numbers = versions if versions is not None else [entry["current_version"]]
            for number in numbers:
                stored = entry["versions"].get(str(int(number)))
                if stored is None:
                    continue
                if mode == "delete" and not stored["destroyed"]:
                    stored["deletion_time"] = stored["deletion_time"] or now_iso()
                elif mode == "undelete" and not stored["destroyed"]:
                    stored["deletion_time"] = ""
                elif mode == "destroy":
                    stored["destroyed"] = True
                    stored["data"] = None
            entry["updated_time"] = now_iso()
            self.state.save()

    # --- metadata --------------------------------------------------------------------

    def read_metadata(self, path: str) -> JSON:
        """Metadata of ``path`` and all its versions.

        Args:
            path: secret path.

        Returns:
            Vault's metadata object.
        """
        entry = self._entry(path)
        versions = {
            number: {k: v for k, v in stored.items() if k != "data"}
            for number, stored in entry["versions"].items()
        }
        oldest = min((int(n) for n in versions), default=0)
        return {
            "cas_required": entry["cas_required"],
            "created_time": entry["created_time"],
            "current_version": entry["current_version"],
            "custom_metadata": entry["custom_metadata"],
            "delete_version_after": entry["delete_version_after"],
            "max_versions": entry["max_versions"],
            "oldest_version": oldest,
            "updated_time": entry["updated_time"],
            "versions": versions,
        }

    def write_metadata(self, path: str, body: JSON) -> None:
        """Update (or create) the metadata of ``path``.

        Args:
            path: secret path.
            body: ``max_versions``, ``cas_required``, ``delete_version_after``, ``custom_metadata``.
        """
        with self.state.lock:
            entry = self._secrets.setdefault(path, self._new_entry(now_iso()))
            if "max_versions" in body:
                entry["max_versions"] = int(body["max_versions"])
            if "cas_required" in body:
                entry["cas_required"] = bool(body["cas_required"])
            if "delete_version_after" in body:
                entry["delete_version_after"] = str(body["delete_version_after"])
            if "custom_metadata" in body:
                entry["custom_metadata"] = body["custom_metadata"]
            entry["updated_time"] = now_iso()
            self._trim(entry)
            self.state.save()

    def delete_metadata(self, path: str) -> None:
        """Forget ``path`` and every version.

        Args:
            path: secret path.
        """
        with self.state.lock:
            if self._secrets.pop(path, None) is not None:
                self.state.save()

    def list(self, prefix: str) -> list[str]:
        """Keys directly under ``prefix`` (folders end with ``/``).

        Args:
            prefix: folder path, with or without trailing slash.

        Returns:
            Sorted keys.

        Raises:
            VaultHTTPError: 404 when nothing lies under ``prefix``.
        """
        folder = prefix.strip("/")
        start = f"{folder}/" if folder else ""
        keys: set[str] = set()
        for path in self._secrets:
            if not path.startswith(start):
                continue
            rest = path[len(start) :]
            head, sep, _ = rest.partition("/")
            keys.add(head + sep)
        if not keys:
            raise VaultHTTPError(404)
        return sorted(keys)

    # --- helpers ---------------------------------------------------------------------

    @staticmethod
    def _new_entry(stamp: str) -> JSON:
        return {
            "versions": {},
            "current_version": 0,
            "cas_required": False,
            "created_time": stamp,
            "updated_time": stamp,
            "custom_metadata": None,
            "delete_version_after": "0s",
            "max_versions": 0,
        }

    def _trim(self, entry: JSON) -> None:
        limit = entry["max_versions"] or self._root["config"].get("max_versions") or 0
        limit = limit or DEFAULT_MAX_VERSIONS
        numbers = sorted(int(n) for n in entry["versions"])
        for number in numbers[: max(0, len(numbers) - limit)]:
            del entry["versions"][str(number)]


def envelope(data: Any = None, *, auth: JSON | None = None) -> JSON:
    """Wrap ``data`` the way every Vault answer is wrapped.

    Args:
        data: the ``data`` field.
        auth: the ``auth`` field (logins).

    Returns:
        Vault's response object.
    """
    return {
        "request_id": f"sandbox-{time.time_ns():x}",
        "lease_id": "",
        "renewable": False,
        "lease_duration": 0,
        "data": data,
        "wrap_info": None,
        "warnings": None,
        "auth": auth,
    }
