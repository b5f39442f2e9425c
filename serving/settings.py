"""Serving configuration, read from ``CXPREDICT_*`` variables when the service starts (never at import).

API keys come from ``CXPREDICT_API_KEYS`` (comma-separated) and/or ``CXPREDICT_API_KEYS_FILE`` (one key
per line, ``#`` comments). Only SHA-256 digests of the keys are kept in memory after loading, and no
key is ever logged.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MAX_CUSTOMERS = 1000
"""Largest ``customer_ids`` list one request may carry (DESIGN §5)."""


class ServeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CXPREDICT_", frozen=True, extra="ignore")

    home: Path | None = None
    """The workspace (``CXPREDICT_HOME``); default ``./.cxpredict``."""
    api_keys: SecretStr = SecretStr("")
    api_keys_file: Path | None = None
    model_alias: str = "champion"
    """Registry alias served for every task."""
    reload_seconds: float = Field(default=30.0, ge=0)
    """How often the registry alias is checked for a new version (0: only ``POST /admin/reload``)."""
    drivers: int = Field(default=5, ge=0, le=20)
    """Top drivers returned per explained block."""

    @field_validator("model_alias")
    @classmethod
    def _alias(cls, value: str) -> str:
        if not value or not value.replace("-", "").replace("_", "").isalnum():
            raise ValueError("model_alias must be a registry alias name")
        return value

    def key_digests(self) -> frozenset[bytes]:
        """SHA-256 digests of every configured key (empty: every protected request is refused)."""
        keys = [key.strip() for key in self.api_keys.get_secret_value().split(",")]
        if self.api_keys_file is not None:
            lines = self.api_keys_file.read_text(encoding="utf-8").splitlines()
            keys += [line.split("#", 1)[0].strip() for line in lines]
        return frozenset(digest(key) for key in keys if key)


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()
