"""Serving configuration, read from ``CXPREDICT_*`` variables when the service starts (never at import).

API keys come from ``CXPREDICT_API_KEYS`` (comma-separated) and/or ``CXPREDICT_API_KEYS_FILE`` (one key
per line, ``#`` comments). Only SHA-256 digests of the keys are kept in memory after loading, and no
key is ever logged.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cxpredict import tasks as registry

MAX_CUSTOMERS = 1000
"""Largest ``customer_ids`` list one request may carry."""
MAX_BODY_BYTES = 256 * 1024
"""Default body limit: ``MAX_CUSTOMERS`` ids of 64 characters in JSON are ~68 KB; the rest is margin."""
PINNED_FILE = Path(__file__).resolve().parents[1] / "pinned_models.json"
"""Written only into a Bento's sources by ``serving.bento``; absent from the repository."""


def pinned_versions(text: str) -> dict[str, str]:
    """``"<task>=3,<task>=2"`` -> ``{"<task>": "3", ...}``, validated against the task registry."""
    names = registry.names()
    pinned: dict[str, str] = {}
    for part in (item.strip() for item in text.split(",")):
        if not part:
            continue
        task, _, version = part.partition("=")
        if task.strip() not in names or not version.strip().isdigit():
            raise ValueError(f"model_versions must look like TASK=VERSION,... (tasks: {', '.join(names)})")
        pinned[task.strip()] = version.strip()
    return pinned


class ServeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CXPREDICT_", frozen=True, extra="ignore")

    home: Path | None = None
    """The workspace (``CXPREDICT_HOME``); default ``./.cxpredict``."""
    api_keys: SecretStr = SecretStr("")
    api_keys_file: Path | None = None
    model_alias: str = "champion"
    """Registry alias served for every task."""
    model_versions: str = ""
    """Pinned versions, ``TASK=VERSION`` comma-separated: served instead of the alias, never
    reloaded (a Bento built by ``serving.bento`` carries them in ``pinned_models.json``)."""
    reload_seconds: float = Field(default=30.0, ge=0)
    """How often the registry alias is checked for a new version (0: only ``POST /admin/reload``)."""
    drivers: int = Field(default=5, ge=0, le=20)
    """Top drivers returned per explained block."""
    max_body_bytes: int = Field(default=MAX_BODY_BYTES, ge=1024)
    """Largest request body the gateway lets through (``CXPREDICT_MAX_BODY_BYTES``); larger is a 413."""

    @field_validator("model_alias")
    @classmethod
    def _alias(cls, value: str) -> str:
        if not value or not value.replace("-", "").replace("_", "").isalnum():
            raise ValueError("model_alias must be a registry alias name")
        return value

    @field_validator("model_versions")
    @classmethod
    def _versions(cls, value: str) -> str:
        pinned_versions(value)
        return value

    def pinned(self) -> dict[str, str]:
        """Task -> pinned version: from ``CXPREDICT_MODEL_VERSIONS``, else from the Bento's
        ``pinned_models.json`` (next to the packages), else none (serve the alias)."""
        if self.model_versions:
            return pinned_versions(self.model_versions)
        if PINNED_FILE.exists():
            return {str(task): str(version) for task, version in json.loads(PINNED_FILE.read_text()).items()}
        return {}

    def key_digests(self) -> frozenset[bytes]:
        """SHA-256 digests of every configured key (empty: every protected request is refused)."""
        keys = [key.strip() for key in self.api_keys.get_secret_value().split(",")]
        if self.api_keys_file is not None:
            lines = self.api_keys_file.read_text(encoding="utf-8").splitlines()
            keys += [line.split("#", 1)[0].strip() for line in lines]
        return frozenset(digest(key) for key in keys if key)


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()
