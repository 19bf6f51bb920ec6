"""One settings object, read from `config/crocevia.toml` and the environment.

Environment variables override the file with `__` between levels, e.g.
`DATABASE__URL=postgresql+psycopg://127.0.0.1/test` or `AGENCIES__INPS__ENDPOINT=...`.
Only `hub.py` calls `load_settings()`; everything below receives the slice it needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

__all__ = [
    "AgencySettings",
    "ApiSettings",
    "DatabaseSettings",
    "PortalSettings",
    "RetrySettings",
    "ScheduleSettings",
    "Settings",
    "TransportSettings",
    "WorkerSettings",
    "load_settings",
    "PROJECT_ROOT",
]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_FILE = PROJECT_ROOT / "config" / "crocevia.toml"


class DatabaseSettings(BaseModel):
    url: str = "sqlite:///var/crocevia.db"
    pool_size: int = 10
    echo: bool = False


class ApiSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 1_048_576
    max_depth: int = 32


class TransportSettings(BaseModel):
    kind: str = "embedded"  # "embedded" (the database queue) or "rabbitmq"
    url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/%2F")


class WorkerSettings(BaseModel):
    lease_seconds: float = 60.0
    poll_interval: float = 0.05
    max_poll_interval: float = 0.5
    batch_size: int = 64
    commit_batch: int = 64


class RetrySettings(BaseModel):
    """Short retries inside one worker pass (tenacity)."""

    attempts: int = 3
    initial_wait: float = 0.2
    max_wait: float = 2.0
    jitter: float = 0.2


class ScheduleSettings(BaseModel):
    """The persisted schedule after the short retries: backoff, then undeliverable."""

    initial_delay: float = 5.0
    max_delay: float = 600.0
    jitter: float = 0.2
    max_rounds: int = 8
    max_age_seconds: float = 86_400.0


class AgencySettings(BaseModel):
    endpoint: str
    connect_timeout: float = 2.0
    read_timeout: float = 10.0
    concurrency: int = 32
    retry: RetrySettings = Field(default_factory=RetrySettings)
    schedule: ScheduleSettings = Field(default_factory=ScheduleSettings)
    fault_overrides: dict[str, str] = Field(default_factory=dict)


class PortalSettings(BaseModel):
    name: str = ""
    api_key_file: str | None = None  # embedded default: generated on first run
    api_key_sha256: str | None = None  # production: the SHA-256 of the key, hex


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_nested_delimiter="__",
        extra="ignore",
        toml_file=str(DEFAULT_CONFIG_FILE),
    )

    data_dir: str = "var"
    routes_file: str = "config/routes.toml"
    mappings_dir: str = "config/mappings"
    log_level: str = "info"
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    transport: TransportSettings = Field(default_factory=TransportSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    agencies: dict[str, AgencySettings] = Field(default_factory=dict)
    portals: dict[str, PortalSettings] = Field(default_factory=dict)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    def path(self, relative: str) -> Path:
        """Resolve a configured path against the project root (absolute paths stay)."""
        candidate = Path(relative)
        return candidate if candidate.is_absolute() else PROJECT_ROOT / candidate


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Read the settings; `overrides` win over environment and file (used by tests and CLI)."""
    if config_file is not None:

        class _FromFile(Settings):
            model_config = SettingsConfigDict(toml_file=str(config_file))

        return _FromFile(**overrides)
    return Settings(**overrides)
