"""Prefect block for HashiCorp Vault; hands out an authenticated hvac client."""

from __future__ import annotations

import hvac
from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from blocks.schema_cache import CachedSchema
from errors import InvalidInputError


class VaultServer(CachedSchema, Block):
    """A Vault server reached with a token or an AppRole, and the KV v2 mount to read from."""

    _block_type_name = "Veza Vault Server"
    _block_type_slug = "veza-vault-server"
    _description = "A HashiCorp Vault server (token or AppRole auth) and its KV v2 mount."

    address: str = Field(description="Vault address, e.g. https://vault.example:8200.")
    token: SecretStr | None = Field(default=None, description="A Vault token.")
    role_id: SecretStr | None = Field(default=None, description="AppRole role_id.")
    secret_id: SecretStr | None = Field(default=None, description="AppRole secret_id.")
    approle_mount: str = Field(default="approle", description="Mount point of the AppRole auth.")
    kv_mount: str = Field(default="secret", description="Mount point of the KV v2 engine.")
    namespace: str | None = Field(default=None, description="Vault Enterprise namespace.")
    timeout_s: float = Field(default=10.0, gt=0, description="Timeout of each request (s).")

    def get_client(self) -> hvac.Client:
        """Build a client and authenticate it (token, or AppRole login).

        Returns:
            An authenticated ``hvac.Client``.

        Raises:
            InvalidInputError: neither a token nor a complete AppRole is configured.
            hvac.exceptions.VaultError: login refused or Vault sealed (translate with
                ``errors.vault.translate_vault_errors``).
        """
        if not self.address.startswith(("http://", "https://")):
            raise InvalidInputError(
                "address",
                f"{self.address!r} is not an http(s) URL",
                fix="e.g. http://127.0.0.1:8200",
            )
        client = hvac.Client(url=self.address, namespace=self.namespace, timeout=self.timeout_s)
        if self.token is not None:
            client.token = self.token.get_secret_value()
        elif self.role_id is not None and self.secret_id is not None:
            client.auth.approle.login(
                role_id=self.role_id.get_secret_value(),
                secret_id=self.secret_id.get_secret_value(),
                mount_point=self.approle_mount,
            )
        else:
            raise InvalidInputError(
                "token",
                "no credentials are configured",
                fix="set token, or both role_id and secret_id (AppRole)",
            )
        return client
