"""Vault HTTP API emulator: KV v2, token and AppRole auth, health and seal, for ``hvac``.

``python -m sandbox.vault.server --port P --state DIR/vault.json`` serves the subset of Vault's API
that veza-ops and its tests use. The state (tokens, secrets, seal) lives in the JSON file, so a
restart keeps everything. The root token, the unseal key and the AppRole credentials are
written next to it (``vault-token``, ``vault-unseal-key``, ``vault-approle.json``, mode 0600).
Policies are recorded but not enforced: every valid token may do everything.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from sandbox.procs import serve_until_terminated
from sandbox.vault.kv import KV2, envelope
from sandbox.vault.state import JSON, VaultHTTPError, VaultState, parse_ttl

_UNSEALED_FREE = frozenset({"sys/seal-status", "sys/init", "sys/unseal", "sys/leader"})
_NO_CONTENT = 204


def write_credentials(state: VaultState, directory: Path) -> None:
    """Write the root token, unseal key and AppRole credentials for the sandbox's users.

    Args:
        state: the emulator state.
        directory: where to write (the state file's folder).
    """
    role = state.data["approle"]["veza-ops"]
    files = {
        "vault-token": state.data["root_token"],
        "vault-unseal-key": state.data["unseal_key"],
        "vault-approle.json": json.dumps(
            {
                "role_name": "veza-ops",
                "role_id": role["role_id"],
                "secret_id": role["secret_ids"][0],
            }
        ),
    }
    for name, text in files.items():
        fd = os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(text)


class _Handler(BaseHTTPRequestHandler):
    """Routes one Vault API request."""

    protocol_version = "HTTP/1.1"
    server_version = "vault-sandbox/1"
    state: VaultState

    def log_message(self, format: str, *args: object) -> None:
        """Log method, path and status only (never headers or bodies: they hold secrets)."""
        code = args[1] if len(args) > 1 else "-"
        sys.stderr.write(f"{self.command} {self.path.split('?', 1)[0]} {code}\n")

    def _reply(self, status: int, payload: JSON | None) -> None:
        body = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        if payload is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(0 if self.command == "HEAD" else len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _body(self) -> JSON:
        length = int(self.headers.get("Content-Length") or 0)
        if not length:
            return {}
        raw = self.rfile.read(length)
        try:
            parsed = json.loads(raw or b"{}")
        except ValueError:
            raise VaultHTTPError(400, "failed to parse JSON input") from None
        if not isinstance(parsed, dict):
            raise VaultHTTPError(400, "request body must be a JSON object")
        return parsed

    def _token(self) -> str | None:
        token = self.headers.get("X-Vault-Token")
        auth = self.headers.get("Authorization", "")
        if not token and auth.lower().startswith("bearer "):
            token = auth[7:].strip()
        return token or None

    def _dispatch(self) -> None:
        try:
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            body = self._body()
            rel = parts.path.removeprefix("/v1/").strip("/")
            if not parts.path.startswith("/v1/"):
                raise VaultHTTPError(404, "unsupported path")
            status, payload = self._route(rel, query, body)
            self._reply(status, payload)
        except VaultHTTPError as error:
            self._reply(error.status, error.body)

    def _route(self, rel: str, query: dict[str, str], body: JSON) -> tuple[int, JSON | None]:
        state, method = self.state, self.command
        if rel == "sys/health":
            return self._health(query)
        if rel in _UNSEALED_FREE:
            return self._sys_open(rel, body)
        if state.data["sealed"]:
            raise VaultHTTPError(503, "Vault is sealed")
        if rel == "auth/approle/login":
            token, record = state.approle_login(
                str(body.get("role_id", "")), str(body.get("secret_id", ""))
            )
            return 200, envelope(auth=state.auth_block(token, record))
        token = self._token() or ""
        record = state.check_token(token)
        if rel.startswith("sys/"):
            return self._sys(rel, body)
        if rel.startswith("auth/"):
            return self._auth(rel, method, body, token, record)
        mount, _, rest = rel.partition("/")
        if mount not in state.data["mounts"]:
            raise VaultHTTPError(404, f"no handler for route '{rel}'")
        return self._kv(KV2(state, mount), rest, method, query, body)

    def _health(self, query: dict[str, str]) -> tuple[int, JSON]:
        sealed = bool(self.state.data["sealed"])
        status = self.state.seal_status()
        payload = {
            "initialized": True,
            "sealed": sealed,
            "standby": False,
            "performance_standby": False,
            "replication_performance_mode": "disabled",
            "replication_dr_mode": "disabled",
            "server_time_utc": int(time.time()),
            "version": status["version"],
            "cluster_name": status["cluster_name"],
            "cluster_id": status["cluster_id"],
        }
        code = int(query.get("sealedcode", 503)) if sealed else int(query.get("activecode", 200))
        return code, payload

    def _sys_open(self, rel: str, body: JSON) -> tuple[int, JSON]:
        state = self.state
        if rel == "sys/init":
            return 200, {"initialized": True}
        if rel == "sys/leader":
            return 200, {"ha_enabled": False, "is_self": True, "leader_address": ""}
        if rel == "sys/unseal" and self.command in ("PUT", "POST"):
            if body.get("reset"):
                return 200, state.seal_status()
            key = str(body.get("key") or "")
            if not secrets.compare_digest(key, state.data["unseal_key"]):
                raise VaultHTTPError(400, "Error unsealing: invalid key")
            state.set_sealed(False)
        return 200, state.seal_status()

    def _sys(self, rel: str, body: JSON) -> tuple[int, JSON | None]:
        state = self.state
        if rel == "sys/seal" and self.command in ("PUT", "POST"):
            state.set_sealed(True)
            return _NO_CONTENT, None
        if rel == "sys/mounts" and self.command == "GET":
            mounts = {
                f"{name}/": {"type": "kv", "options": {"version": "2"}, "description": ""}
                for name in state.data["mounts"]
            }
            return 200, {**mounts, **envelope(mounts)}
        if rel.startswith("sys/mounts/"):
            name = rel.removeprefix("sys/mounts/").strip("/")
            with state.lock:
                if self.command == "DELETE":
                    state.data["mounts"].pop(name, None)
                elif self.command in ("POST", "PUT"):
                    options = body.get("options") or {}
                    if body.get("type") not in ("kv", "kv-v2") or str(
                        options.get("version", "2")
                    ) != "2":
                        raise VaultHTTPError(400, "the sandbox only offers KV version 2 engines")
                    if name in state.data["mounts"]:
                        raise VaultHTTPError(400, f"path is already in use at {name}/")
                    state.data["mounts"][name] = {
                        "config": {"max_versions": 0, "cas_required": False},
                        "data": {},
                    }
                state.save()
            return _NO_CONTENT, None
        raise VaultHTTPError(404, f"no handler for route '{rel}'")

    def _auth(
        self, rel: str, method: str, body: JSON, token: str, record: JSON
    ) -> tuple[int, JSON | None]:
        state = self.state
        if rel == "auth/token/lookup-self":
            return 200, envelope(state.lookup(token, record))
        if rel in ("auth/token/create", "auth/token/create-orphan") and method in ("POST", "PUT"):
            policies = body.get("policies") or record["policies"]
            ttl = parse_ttl(body.get("ttl"))
            new, new_record = state.new_token(
                str(body.get("display_name") or "token"), list(policies), ttl, "auth/token/create"
            )
            if body.get("meta"):
                new_record["meta"] = body["meta"]
            return 200, envelope(auth=state.auth_block(new, new_record))
        if rel == "auth/token/renew-self" and method in ("POST", "PUT"):
            renewed = state.renew(token, parse_ttl(body.get("increment")))
            return 200, envelope(auth=state.auth_block(token, renewed))
        if rel == "auth/token/revoke-self" and method in ("POST", "PUT"):
            state.revoke(token)
            return _NO_CONTENT, None
        prefix = "auth/approle/role/"
        if rel.startswith(prefix):
            name, _, what = rel.removeprefix(prefix).partition("/")
            role = state.role(name)
            if what == "role-id" and method == "GET":
                return 200, envelope({"role_id": role["role_id"]})
            if what == "secret-id" and method in ("POST", "PUT"):
                secret_id = state.new_secret_id(name)
                data = {
                    "secret_id": secret_id,
                    "secret_id_accessor": secrets.token_hex(8),
                    "secret_id_ttl": 0,
                    "secret_id_num_uses": 0,
                }
                return 200, envelope(data)
        raise VaultHTTPError(404, f"no handler for route '{rel}'")

    def _kv(
        self, kv: KV2, rest: str, method: str, query: dict[str, str], body: JSON
    ) -> tuple[int, JSON | None]:
        kind, _, path = rest.partition("/")
        writing = method in ("POST", "PUT")
        if kind == "config":
            if writing:
                kv.write_config(body)
                return _NO_CONTENT, None
            return 200, envelope(kv.read_config())
        if kind == "metadata" and (method == "LIST" or query.get("list") in ("true", "1")):
            return 200, envelope({"keys": kv.list(path)})
        if not path:
            raise VaultHTTPError(404, f"no handler for route '{kv.mount}/{rest}'")
        if kind == "data":
            if method in ("GET", "HEAD"):
                version = int(query["version"]) if query.get("version") else None
                return 200, envelope(kv.read(path, version))
            if writing:
                return 200, envelope(kv.write(path, body))
            if method == "PATCH":
                return 200, envelope(kv.patch(path, body))
            if method == "DELETE":
                kv.delete_versions(path, None, mode="delete")
                return _NO_CONTENT, None
        if kind in ("delete", "undelete", "destroy") and writing:
            versions = body.get("versions")
            if not isinstance(versions, list) or not versions:
                raise VaultHTTPError(400, "no version number provided")
            kv.delete_versions(path, [int(v) for v in versions], mode=kind)
            return _NO_CONTENT, None
        if kind == "metadata":
            if method == "GET":
                return 200, envelope(kv.read_metadata(path))
            if writing:
                kv.write_metadata(path, body)
                return _NO_CONTENT, None
            if method == "DELETE":
                kv.delete_metadata(path)
                return _NO_CONTENT, None
        raise VaultHTTPError(405, f"unsupported operation {method} on {kv.mount}/{kind}")

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_LIST = _dispatch


def make_server(host: str, port: int, state: VaultState) -> ThreadingHTTPServer:
    """Build (and bind) the emulator's HTTP server.

    Args:
        host: address to listen on.
        port: port (0 picks one).
        state: the emulator state.

    Returns:
        The bound server; call ``serve_forever``.
    """
    handler = type("VaultHandler", (_Handler,), {"state": state})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> int:
    """Run the emulator until SIGTERM/SIGINT.

    Args:
        argv: arguments (defaults to ``sys.argv[1:]``).

    Returns:
        Exit status.
    """
    parser = argparse.ArgumentParser(prog="python -m sandbox.vault.server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state", type=Path, required=True, help="JSON state file")
    args = parser.parse_args(argv)
    state = VaultState(args.state)
    write_credentials(state, args.state.resolve().parent)
    server = make_server(args.host, args.port, state)

    return serve_until_terminated(server, banner=f"vault emulator on http://{args.host}:{server.server_port}")


if __name__ == "__main__":
    raise SystemExit(main())
