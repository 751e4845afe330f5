"""The Vault emulator spoken to by the real hvac client."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import hvac
import hvac.exceptions
import pytest

from sandbox.procs import free_port, port_open, spawn, stop_pid, wait_until

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class VaultProc:
    addr: str
    dir: Path
    port: int
    pid: int

    @property
    def root_token(self) -> str:
        return (self.dir / "vault-token").read_text()

    def client(self, token: str | None = None) -> hvac.Client:
        return hvac.Client(url=self.addr, token=token if token is not None else self.root_token)


def _start(directory: Path, port: int) -> int:
    proc = spawn(
        [sys.executable, "-m", "sandbox.vault.server", "--port", str(port),
         "--state", str(directory / "vault.json")],
        log_path=directory / "vault.log", cwd=ROOT,
    )
    wait_until(lambda: port_open(port), timeout=15, what="vault emulator port")
    return proc.pid


@pytest.fixture(scope="module")
def vault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VaultProc]:
    directory = tmp_path_factory.mktemp("vault")
    port = free_port()
    running = VaultProc(f"http://127.0.0.1:{port}", directory, port, _start(directory, port))
    yield running
    stop_pid(running.pid)


@pytest.fixture
def path() -> str:
    return f"veza/test/{uuid.uuid4().hex[:8]}"


def test_kv2_write_read_versions(vault: VaultProc, path: str):
    kv = vault.client().secrets.kv.v2
    first = kv.create_or_update_secret(path=path, secret={"database_url": "postgres://a"})
    assert first["data"]["version"] == 1
    kv.create_or_update_secret(path=path, secret={"database_url": "postgres://b"})
    latest = kv.read_secret_version(path=path, raise_on_deleted_version=True)
    assert latest["data"]["data"] == {"database_url": "postgres://b"}
    assert latest["data"]["metadata"]["version"] == 2
    old = kv.read_secret_version(path=path, version=1, raise_on_deleted_version=True)
    assert old["data"]["data"] == {"database_url": "postgres://a"}
    kv.patch(path=path, secret={"jwt_secret": "s3"})
    assert kv.read_secret_version(path=path, raise_on_deleted_version=True)["data"]["data"] == {
        "database_url": "postgres://b", "jwt_secret": "s3"}


def test_kv2_check_and_set(vault: VaultProc, path: str):
    kv = vault.client().secrets.kv.v2
    kv.create_or_update_secret(path=path, secret={"k": "1"}, cas=0)
    with pytest.raises(hvac.exceptions.InvalidRequest, match="check-and-set"):
        kv.create_or_update_secret(path=path, secret={"k": "2"}, cas=0)
    assert kv.create_or_update_secret(path=path, secret={"k": "2"}, cas=1)["data"]["version"] == 2


def test_kv2_metadata_list_and_delete(vault: VaultProc, path: str):
    kv = vault.client().secrets.kv.v2
    kv.create_or_update_secret(path=path, secret={"a": "1"})
    kv.create_or_update_secret(path=path, secret={"a": "2"})
    meta = kv.read_secret_metadata(path=path)["data"]
    assert meta["current_version"] == 2 and set(meta["versions"]) == {"1", "2"}
    folder, leaf = path.rsplit("/", 1)
    assert leaf in kv.list_secrets(path=folder)["data"]["keys"]
    assert "test/" in kv.list_secrets(path="veza")["data"]["keys"]

    kv.delete_latest_version_of_secret(path=path)
    with pytest.raises(hvac.exceptions.InvalidPath):
        kv.read_secret_version(path=path, raise_on_deleted_version=True)
    deleted = kv.read_secret_version(path=path, raise_on_deleted_version=False)
    assert deleted["data"]["metadata"]["deletion_time"] != ""
    kv.undelete_secret_versions(path=path, versions=[2])
    assert kv.read_secret_version(path=path, raise_on_deleted_version=True)["data"]["data"] == {
        "a": "2"}
    kv.destroy_secret_versions(path=path, versions=[1])
    assert kv.read_secret_metadata(path=path)["data"]["versions"]["1"]["destroyed"] is True

    kv.update_metadata(path=path, max_versions=1)
    kv.create_or_update_secret(path=path, secret={"a": "3"})
    assert set(kv.read_secret_metadata(path=path)["data"]["versions"]) == {"3"}

    kv.delete_metadata_and_all_versions(path=path)
    with pytest.raises(hvac.exceptions.InvalidPath):
        kv.read_secret_metadata(path=path)


def test_missing_secret_is_404(vault: VaultProc, path: str):
    with pytest.raises(hvac.exceptions.InvalidPath):
        vault.client().secrets.kv.v2.read_secret_version(path=path, raise_on_deleted_version=True)


def test_tokens_lookup_create_and_bad_token(vault: VaultProc, path: str):
    root = vault.client()
    assert root.is_authenticated()
    assert root.auth.token.lookup_self()["data"]["policies"] == ["root"]
    created = root.auth.token.create(policies=["reader"], ttl="1h")["auth"]
    child = vault.client(created["client_token"])
    data = child.auth.token.lookup_self()["data"]
    assert data["policies"] == ["reader"] and 0 < data["ttl"] <= 3600
    child.secrets.kv.v2.create_or_update_secret(path=path, secret={"x": "1"})

    bad = vault.client("hvs.not-a-token")
    assert not bad.is_authenticated()
    with pytest.raises(hvac.exceptions.Forbidden, match="permission denied"):
        bad.secrets.kv.v2.read_secret_version(path=path, raise_on_deleted_version=True)
    with pytest.raises(hvac.exceptions.Forbidden):
        vault.client("").secrets.kv.v2.read_secret_version(path=path, raise_on_deleted_version=True)


def test_approle_login(vault: VaultProc):
    creds = json.loads((vault.dir / "vault-approle.json").read_text())
    app = hvac.Client(url=vault.addr)
    answer = app.auth.approle.login(role_id=creds["role_id"], secret_id=creds["secret_id"])
    assert answer["auth"]["lease_duration"] > 0
    assert app.is_authenticated()
    root = vault.client()
    assert root.auth.approle.read_role_id("veza-ops")["data"]["role_id"] == creds["role_id"]
    extra = root.auth.approle.generate_secret_id("veza-ops")["data"]["secret_id"]
    assert hvac.Client(url=vault.addr).auth.approle.login(creds["role_id"], extra)["auth"]
    with pytest.raises(hvac.exceptions.InvalidRequest, match="invalid role or secret ID"):
        hvac.Client(url=vault.addr).auth.approle.login(creds["role_id"], "wrong")


def test_sealed_vault_answers_503(vault: VaultProc, path: str):
    root = vault.client()
    root.secrets.kv.v2.create_or_update_secret(path=path, secret={"x": "1"})
    assert root.sys.read_health_status(method="GET")["sealed"] is False
    root.sys.seal()
    try:
        assert root.sys.is_sealed()
        assert root.sys.read_health_status(method="GET").status_code == 503
        with pytest.raises(hvac.exceptions.VaultDown, match="Vault is sealed"):
            root.secrets.kv.v2.read_secret_version(path=path, raise_on_deleted_version=True)
        with pytest.raises(hvac.exceptions.InvalidRequest):
            root.sys.submit_unseal_key("not-the-key")
        assert root.sys.is_sealed()
    finally:
        root.sys.submit_unseal_key((vault.dir / "vault-unseal-key").read_text())
    assert not root.sys.is_sealed()
    assert root.secrets.kv.v2.read_secret_version(
        path=path, raise_on_deleted_version=True)["data"]["data"] == {"x": "1"}


def test_restart_keeps_secrets(tmp_path: Path):
    port = free_port()
    pid = _start(tmp_path, port)
    addr = f"http://127.0.0.1:{port}"
    token = (tmp_path / "vault-token").read_text()
    hvac.Client(url=addr, token=token).secrets.kv.v2.create_or_update_secret(
        path="veza/staging/x", secret={"jwt_secret": "kept"})
    stop_pid(pid)
    assert (tmp_path / "vault.json").stat().st_mode & 0o077 == 0
    pid = _start(tmp_path, port)
    try:
        assert (tmp_path / "vault-token").read_text() == token
        read = hvac.Client(url=addr, token=token).secrets.kv.v2.read_secret_version(
            path="veza/staging/x", raise_on_deleted_version=True)
        assert read["data"]["data"] == {"jwt_secret": "kept"}
    finally:
        stop_pid(pid)
