"""One settings object, read from `config/crocevia.toml` and the environment.

Environment variables override the file with `__` between levels, e.g.
`DATABASE__URL=postgresql+psycopg://127.0.0.1/test` or `AGENCIES__INPS__ENDPOINT=...`.
Only `hub.py` calls `load_settings()`; everything below receives the slice it needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

__all__ = [
    "AgencySettings",
    "AttachmentSettings",
    "ApiSettings",
    "AgencyIdentitySettings",
    "CircuitSettings",
    "EmbeddedSettings",
    "DatabaseSettings",
    "DraftSettings",
    "HttpSettings",
    "LateOutcomeSettings",
    "MaintenanceWindowSettings",
    "NotificationSettings",
    "OperatorSettings",
    "IdentitySettings",
    "PortalSettings",
    "RelaySettings",
    "RetentionSettings",
    "RetrySettings",
    "ScheduleSettings",
    "Settings",
    "SettingsError",
    "SupervisionSettings",
    "TransportSettings",
    "WorkerSettings",
    "load_settings",
    "PROJECT_ROOT",
]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_FILE = PROJECT_ROOT / "config" / "crocevia.toml"


#: The signature algorithms of the hub's and the portals' keys (security/keys.py ALGORITHMS).
Algorithm = Literal["RS256", "ES256"]
#: Log levels, in any case (`LOG_LEVEL=DEBUG` as well as `log_level = "debug"`).
LogLevel = Annotated[Literal["debug", "info", "warning", "error", "critical"],
                     BeforeValidator(lambda level: level.lower() if isinstance(level, str) else level)]


class SettingsError(ValueError):
    """The settings do not validate; the message names the file and each dotted key."""


class _Section(BaseModel):
    """A group of settings: a key it does not declare is a typo, refused at start-up."""

    model_config = ConfigDict(extra="forbid")


class DatabaseSettings(_Section):
    url: str = "sqlite:///var/crocevia.db"
    pool_size: int = 10
    echo: bool = False
    #: PostgreSQL: a worker process (`hub.py worker`) plans each of its prepared statements once
    #: per connection (`plan_cache_mode = force_generic_plan`). Its delivery reads look rows up by
    #: lists of keys, which PostgreSQL otherwise plans again at every execution: about an eighth of the
    #: server's CPU per delivery at half load (docs/performance.md, fourteenth round). False:
    #: PostgreSQL chooses, statement by statement.
    worker_generic_plans: bool = True


class ApiSettings(_Section):
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 1_048_576
    max_depth: int = 32
    #: Compiled copies of the filing XSD that report an invalid filing's errors (each ~260 KiB
    #: of C memory), lent to one thread at a time: an invalid filing waits while all are in use.
    #: A valid filing needs none of them: one more copy, shared by every thread, tells it.
    schema_validators: int = Field(default=2, ge=1)
    #: Where agencies reach the hub's callbacks (`X-ReplyTo` = `<public_url>/v1/callbacks/<agency>`);
    #: default `http://<host>:<port>`.
    public_url: str | None = None
    #: The HTTP server's own limits (README, "The HTTP server's limits"): seconds a client has
    #: to send a request's whole head (slowloris: then 408 and closed), ...
    header_timeout: float = 10.0
    #: ... seconds an idle kept-alive connection stays open, ...
    keep_alive_timeout: float = 5.0
    #: ... connections served at once (a request beyond answers 503), ...
    max_connections: int = 1000
    #: ... and the largest request head, request line and headers (beyond: 431).
    max_header_bytes: int = 16_384
    #: Seconds `/readyz` waits for the store to answer before calling it unreachable.
    readiness_timeout: float = 2.0
    #: Admission control (api/admission.py): filings processed at once (0: no limit), ...
    max_inflight_submissions: int = 32
    #: ... and how long one more waits for a slot before it is answered 503 with Retry-After.
    max_queue_wait_ms: int = 200
    #: Threads the API runs its blocking work on (the intake's own pool; reads and the console
    #: on starlette's), instead of anyio's 40; admitted filings beyond them wait for one. Each
    #: thread keeps C memory of its own (lxml, libpq, OpenSSL), and with the GIL more threads
    #: than cores mostly wait (issue 13: 8 instead of 32 busy, API peak -4 MiB, same CPU).
    threads: int = Field(default=8, ge=1)


class TransportSettings(_Section):
    kind: Literal["embedded", "rabbitmq"] = "embedded"  #: the database queue, or RabbitMQ
    url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/%2F")
    #: The other nodes of a cluster, tried in turn when `url` cannot be reached (a node stopped).
    urls: list[SecretStr] = []
    #: Names of the exchanges and queues start with this (one prefix per deployment or test).
    prefix: str = "crocevia"
    #: Deliveries of one message before the quorum queue dead-letters it (poison cap).
    delivery_limit: int = 20
    heartbeat: int = 30
    confirm_timeout: float = 30.0
    reconnect_initial: float = 0.2
    reconnect_max: float = 5.0


class EmbeddedSettings(_Section):
    """The embedded hub (`[transport] kind = "embedded"`): `hub.py serve` with its workers."""

    #: Worker processes `hub.py serve` starts on the same database, supervised and stopped with
    #: it; 0: the worker runs in the API's own process and event loop. One process's work is
    #: bound by its GIL; children use the other cores (issue 13). RabbitMQ ignores it.
    worker_processes: int = Field(default=0, ge=0, le=64)


class RelaySettings(_Section):
    """The outbox relay: publishes committed jobs when due (it is also the retry scheduler)."""

    batch_size: int = 500
    lease_seconds: float = 15.0
    poll_interval: float = 0.02
    max_poll_interval: float = 0.2
    #: After a pass shorter than a batch, seconds to wait before claiming again, so that the
    #: next pass carries more jobs: each pass costs a statement and a confirm round trip
    #: whatever its size, and its jobs reach each worker as one claim (one store read) and
    #: come back in fewer commits. Adds up to this much to a job's wait at light load.
    gather_interval: float = Field(default=0.05, ge=0)
    #: Fault injection for tests only: seconds to wait between the broker's confirm and the mark.
    hold_before_mark: float = 0.0


class WorkerSettings(_Section):
    lease_seconds: float = 60.0
    poll_interval: float = 0.05
    max_poll_interval: float = 0.5
    batch_size: int = 64
    commit_batch: int = 64
    #: A job handed out this many times without an outcome (its workers died or hung each
    #: time) is a poison job: its delivery becomes undeliverable instead of being sent again.
    #: With RabbitMQ it is kept below `transport.delivery_limit`, so the hub acts before the
    #: broker dead-letters the message.
    max_handouts: int = 10
    #: A batch of outcomes whose commit fails for another reason than a database outage is
    #: tried this many times, then split; the outcome that still cannot be recorded parks its
    #: delivery as undeliverable (`COMMIT_FAILED`). An outage is retried until it ends.
    commit_attempts: int = 3
    #: While calls are still in flight, seconds a short batch of outcomes waits for theirs
    #: before its commit (a commit costs about the same for one outcome as for dozens).
    commit_gather_interval: float = Field(default=0.01, ge=0)
    #: How often a worker re-reads which agencies operators paused (seconds): a pause holds
    #: in every worker process within this time.
    pause_check_interval: float = 1.0
    #: How far a paused agency's job is moved each time a worker meets it; resuming makes
    #: such jobs due at once, so this only bounds how often a long pause is re-checked.
    pause_hold_seconds: float = 300.0


class SupervisionSettings(_Section):
    """How a process watches its background tasks (service/supervisor.py): a dead one is
    logged with its traceback and the process exits non-zero."""

    #: Fault injection for tests only: the background task of this name (api, worker,
    #: notifier, relay, consumer) raises at start instead of running.
    fail_task_for_tests: str = ""
    #: A watched loop that has not come round for this many seconds is reported stalled by
    #: `/readyz` (it is alive but does no work: a hung call, a blocked thread).
    stall_after: float = 60.0


#: The long-running services of `hub.py` built on a hub.
HubService = Literal["serve", "worker", "relay"]


class MemorySettings(_Section):
    """How a long-running process keeps its resident memory bounded (issue 13: <= 120 MiB)."""

    #: glibc malloc arenas a process may create (mallopt M_ARENA_MAX), set at start by the
    #: services of `hub.py`. glibc's default, 8 per core, gives each thread pool worker its own
    #: arena; their free-but-unreturned pages add tens of MiB of RSS. 0: leave glibc's default.
    malloc_arena_max: int = Field(default=2, ge=0)
    #: Every this many seconds the services of `hub.py` hand glibc's free heap pages back to the
    #: system (malloc_trim): freed C memory (lxml, libpq, OpenSSL) otherwise stays resident, and
    #: under a steady load the kept pages grow (issue 13's soak: a worker 0.7-0.9 MiB a minute
    #: without, ~0.2 with). A trim holds malloc's locks while it walks the heaps: 0.1-0.2 ms in a
    #: worker at half load (at most 6 ms), one taking 50 ms or more is logged. 0: never.
    malloc_trim_seconds: float = Field(default=10.0, ge=0)
    #: New container objects between two collections of the youngest generation (gc's first
    #: threshold) in the services of `hub.py`; 0: Python's own 700. Fewer collections cost less
    #: in all, and what they leave uncollected between two is a few MiB at most.
    gc_young_threshold: int = Field(default=10_000, ge=0)
    #: Seconds after a service of `hub.py` is built (its store answered, its start-up garbage
    #: collected before it takes work: `hub.py`, `_service_hub`) when what it holds is set
    #: aside from every later collection (`gc.freeze`): modules, settings, compiled schemas and
    #: contracts are walked by no full collection after that. 0: never.
    gc_freeze_after: float = Field(default=10.0, ge=0)
    #: The services of `hub.py` that run on Python's optimized bytecode (`python -OO`): such a
    #: service, started without it, replaces itself at once by the same command with it (same
    #: pid, same open descriptors). No docstring is loaded: ~5 MiB of a worker's ~122 MiB
    #: peak (issue 13: <= 120). No `assert` statement runs either: the hub's narrow types or
    #: catch its own misuse (none checks input), and the libraries' check their own callers.
    #: Not `serve` by default: FastAPI takes the routes' descriptions in the API's OpenAPI
    #: document from their docstrings. []: none.
    optimized_bytecode: list[HubService] = Field(default_factory=lambda: list[HubService](("worker", "relay")))


class AttachmentSettings(_Section):
    """`POST /v1/attachments`: how large, of which types, where kept, how long unreferenced."""

    #: The largest attachment accepted; one byte more is answered 413 as soon as it arrives.
    max_bytes: int = Field(default=20 * 1024 * 1024, gt=0)
    #: Media types accepted (PDF and PDF/A, CAdES `.p7m`, XML); others are answered 415.
    media_types: list[str] = Field(default_factory=lambda: ["application/pdf", "application/pkcs7-mime",
                                                            "application/xml"])
    #: The blob store's folder; empty: `blobs/` beside the SQLite file, else under `data_dir`.
    blob_dir: str = ""
    #: Seconds an attachment no filing references is kept before it expires.
    unreferenced_ttl: float = Field(default=7 * 24 * 3600.0, gt=0)


class MetricsSettings(_Section):
    """`/metrics`, `/healthz` and `/readyz` of the processes without an API (README, "Observability")."""

    #: Where `hub.py worker` and `hub.py relay` serve them; loopback unless told otherwise.
    host: str = "127.0.0.1"
    #: The worker's listener port; 0 disables it (`hub.py worker --metrics-port` overrides).
    worker_port: int = Field(default=0, ge=0, le=65535)
    #: The relay's listener port; 0 disables it (`hub.py relay --metrics-port` overrides).
    relay_port: int = Field(default=0, ge=0, le=65535)
    #: Seconds a reading of the store's gauges is reused, however often it is scraped.
    store_ttl: float = Field(default=5.0, ge=0)
    #: How often a worker re-reports its agencies' circuits (seconds).
    circuit_report_interval: float = Field(default=15.0, gt=0)
    #: A circuit whose last report is older than this is shown `stale` (its worker stopped).
    circuit_stale_after: float = Field(default=60.0, gt=0)


class RetrySettings(_Section):
    """Short retries inside one worker pass (tenacity)."""

    attempts: int = 3
    initial_wait: float = 0.2
    max_wait: float = 2.0
    jitter: float = 0.2


class ScheduleSettings(_Section):
    """The persisted schedule after the short retries: backoff, then undeliverable."""

    initial_delay: float = 5.0
    max_delay: float = 600.0
    jitter: float = 0.2
    max_rounds: int = 8
    max_age_seconds: float = 86_400.0


class CircuitSettings(_Section):
    """The agency's circuit breaker: opens after `failure_threshold` consecutive transient
    failures, lets one probe through after `cool_down` seconds."""

    failure_threshold: int = 5
    cool_down: float = 30.0
    probe_wait: float = 1.0  #: how long other passes wait while the probe is in flight


class MaintenanceWindowSettings(_Section):
    """No call inside the window; `days` like "sun", "mon-fri", "sat,sun" or "*"; `end` at or
    before `start` runs past midnight."""

    days: str = "*"
    start: str
    end: str
    tz: str = "Europe/Rome"


class LateOutcomeSettings(_Section):
    """When the agency acknowledges first and protocols later (AgID non-blocking patterns)."""

    poll_initial: float = 1.0  #: PULL: first poll of the status resource, then doubling
    poll_max: float = 300.0
    callback_timeout: float = 300.0  #: PUSH: re-send the same message id if no callback by then
    max_wait_seconds: float = 604_800.0  #: then the delivery is parked as undeliverable


class AgencySettings(_Section):
    endpoint: str
    connect_timeout: float = 2.0
    read_timeout: float = 10.0
    #: Seconds one call may take in all (pool wait, connect, send, the whole reply): past it the
    #: call ends as outcome-unknown. `read_timeout` only bounds the gap between two bytes.
    #: `worker.lease_seconds` must exceed the worst pass this allows (checked at start-up).
    call_deadline: float = Field(default=15.0, gt=0)
    concurrency: int = 32
    prefetch: int | None = None  # RabbitMQ prefetch per worker; default: `concurrency`
    retry: RetrySettings = Field(default_factory=RetrySettings)
    schedule: ScheduleSettings = Field(default_factory=ScheduleSettings)
    fault_overrides: dict[str, str] = Field(default_factory=dict)
    #: How the hub signs what it sends this agency (none by default).
    identity: AgencyIdentitySettings = Field(default_factory=lambda: AgencyIdentitySettings())
    circuit: CircuitSettings = Field(default_factory=lambda: CircuitSettings())
    maintenance: list[MaintenanceWindowSettings] = Field(default_factory=list)
    late: LateOutcomeSettings = Field(default_factory=lambda: LateOutcomeSettings())
    #: Endpoints of particular contract versions (`v2 = "http://..."`), when two versions of
    #: the agency's service are live at different addresses; the others use `endpoint`.
    endpoints: dict[str, str] = Field(default_factory=dict)
    #: Serve this agency from the schema-driven sandbox (simulators/sandbox.py) on the port of
    #: `endpoint`, started with `hub.py serve --with-simulators` or `hub.py sandbox`.
    sandbox: bool = False


class AgencyIdentitySettings(_Section):
    """Outgoing identity towards one agency, as that agency's profile asks.

    `profile`: "none"; "modi" (REST: ID_AUTH_REST_02 bearer token, Digest and
    Agid-JWT-Signature); "wss" (SOAP: WS-Security timestamp and an XML signature over Body
    and Timestamp, with the hub's certificate as a BinarySecurityToken).
    """

    profile: Literal["none", "modi", "wss"] = "none"
    audience: str = ""  #: the agency's `aud` (modi); default: the agency's endpoint
    ttl_seconds: int = 60  #: token or timestamp lifetime


# AgencySettings names AgencyIdentitySettings before it is defined: resolve it now, so the
# environment source sees the nested group (AGENCIES__INPS__IDENTITY__PROFILE).
AgencySettings.model_rebuild()


class IdentitySettings(_Section):
    """Incoming ModI verification, lockout, and the hub's own signing key.

    The hub's key and certificate (for outgoing signatures) are generated on first run
    when their files do not exist; production points these paths at issued ones.
    """

    audience: str = "crocevia"  #: the `aud` portals must address their tokens to
    max_token_seconds: float = 300.0  #: the longest `exp - iat` accepted
    leeway_seconds: float = 30.0  #: clock skew tolerated
    lockout_threshold: int = 10
    lockout_seconds: float = 300.0
    failure_window_seconds: float = 300.0
    issuer: str = "crocevia"  #: the hub's `iss` towards agencies
    signing_algorithm: Algorithm = "ES256"  #: of a key generated on first run (an existing key is used as is)
    signing_key_file: str = "var/secrets/hub-signing.pem"
    signing_certificate_file: str = "var/secrets/hub-signing.crt"


class PortalSettings(_Section):
    """A portal that may call the hub, and the key its ModI requests are verified with.

    Production registers the public key or X.509 certificate (`public_key` inline PEM or
    `public_key_file`). The embedded demo portal instead names a `private_key_file`: it is
    generated on first run, and the hub derives the public key from it.
    """

    name: str = ""
    algorithm: Algorithm = "RS256"
    public_key: str | None = None  #: inline PEM (public key or certificate)
    public_key_file: str | None = None  #: PEM file (public key or certificate)
    private_key_file: str | None = None  #: embedded default only: generated on first run
    #: Where the hub POSTs this portal's filing events (none: the feed only).
    callback_url: str | None = None
    #: The HMAC-SHA256 secret of the callbacks' signature; or a file, generated on first run.
    callback_secret: SecretStr | None = None
    callback_secret_file: str | None = None
    #: The most callbacks in flight to this portal at once, per worker: what its callback
    #: address can take. A portal that holds its callbacks fills this share, not the notifier's
    #: window, and the other portals' events keep going.
    callback_concurrency: int = Field(default=32, ge=1)


class OperatorSettings(_Section):
    """Operator identity (api/ops/auth.py): console sessions, login lockout, personal tokens."""

    #: A console session unused this long ends (the INPS rule: 30 minutes).
    session_idle_seconds: float = Field(default=1800.0, gt=0)
    #: A console session ends this long after login, however busy.
    session_absolute_seconds: float = Field(default=28_800.0, gt=0)
    cookie_name: str = "crocevia_session"
    #: Send the session cookie over HTTPS only; the embedded default on loopback HTTP sets false.
    cookie_secure: bool = True
    #: This many failed logins of one account within the window lock it for `lockout_seconds`.
    lockout_threshold: int = Field(default=10, ge=1)
    failure_window_seconds: float = Field(default=300.0, gt=0)
    lockout_seconds: float = Field(default=900.0, gt=0)
    #: A personal access token's lifetime when `--days` is not given, and the longest allowed.
    token_days: int = Field(default=90, ge=1)
    max_token_days: int = Field(default=366, ge=1)
    min_password_length: int = Field(default=12, ge=8)
    #: The issuer shown by authenticator apps for the TOTP second factor.
    totp_issuer: str = "Crocevia"


class NotificationSettings(_Section):
    """Pushing filing events to the portals' callback addresses."""

    initial_delay: float = 1.0
    max_delay: float = 300.0
    jitter: float = 0.2
    #: Seconds for each step of a callback: connect, the wait for a free connection, the gap
    #: between two bytes of the answer.
    timeout: float = 10.0
    #: Seconds for the whole callback, answer included (aiohttp has no write timeout).
    call_deadline: float = Field(default=20.0, gt=0)
    #: The most callbacks in flight per worker, to every portal together (its connections). A
    #: filing's events go one at a time, each after the last is recorded, so the window must
    #: cover the events written per second times that round trip: at 16, on a busy 2-core
    #: machine, the portal fell tens of seconds behind (docs/performance.md, twelfth round).
    concurrency: int = Field(default=64, ge=1)
    lease_seconds: float = 60.0
    poll_interval: float = 0.05
    max_poll_interval: float = 0.5
    #: The horizon: an event not taken by the portal this long after it was written is given
    #: up (no more pushes; the portal still reads it from `GET /v1/filings/{ref}/events`).
    max_age_seconds: float = 86_400.0


class HttpSettings(_Section):
    """How the hub's outgoing clients speak HTTP: its calls to agencies and to portals' callbacks."""

    #: "aiohttp": aiohttp's client behind httpx's seam (`adapters/http_transport.py`), the
    #: cheaper per call on `bench/http_clients.py`; "httpx": httpx's own transport (a switch
    #: back). Either is bounded by the agency's (or the notifier's) concurrency.
    pool: Literal["aiohttp", "httpx"] = "aiohttp"
    #: The largest agency reply read ("aiohttp" only); a larger one is a protocol error.
    max_body_bytes: int = 16 * 1024 * 1024


class DraftSettings(_Section):
    """Drafts (`/v1/drafts`): how long one lives after its last save, how many a user keeps."""

    ttl_days: float = Field(default=30, gt=0)
    max_per_user: int = Field(default=100, ge=1)


class RetentionSettings(_Section):
    """How long settled filings keep their payloads (documents, messages, bodies sent and received)."""

    #: Days after a filing settled before its payloads are purged (references, states,
    #: protocol numbers and hashes stay). 0: never purge.
    settled_payload_days: int = Field(default=365, ge=0)
    #: Seconds between two purge passes of a worker (0: only `hub.py retention run`).
    interval_seconds: float = Field(default=3600.0, ge=0)
    #: Filings purged per transaction (each with its audit line).
    batch: int = Field(default=200, ge=1, le=10_000)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_nested_delimiter="__",
        extra="forbid",
        toml_file=str(DEFAULT_CONFIG_FILE),
    )

    data_dir: str = "var"
    routes_file: str = "config/routes.toml"
    mappings_dir: str = "config/mappings"
    #: The agency declarations (docs/agencies-as-configuration.md).
    agencies_dir: str = "config/agencies"
    #: Where `external:` interface documents are read in place (third-party WSDL/OpenAPI).
    external_dir: str = "../shared/external"
    #: Sample filings every route's mapping is checked with at start-up.
    samples_dir: str = "schemas/filing/v1/examples"
    log_level: LogLevel = "info"
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    transport: TransportSettings = Field(default_factory=TransportSettings)
    embedded: EmbeddedSettings = Field(default_factory=EmbeddedSettings)
    relay: RelaySettings = Field(default_factory=RelaySettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    agencies: dict[str, AgencySettings] = Field(default_factory=dict)
    portals: dict[str, PortalSettings] = Field(default_factory=dict)
    identity: IdentitySettings = Field(default_factory=IdentitySettings)
    operators: OperatorSettings = Field(default_factory=OperatorSettings)
    notifications: NotificationSettings = Field(default_factory=NotificationSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    supervision: SupervisionSettings = Field(default_factory=SupervisionSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    memory: MemorySettings = Field(default_factory=MemorySettings)
    drafts: DraftSettings = Field(default_factory=DraftSettings)

    retention: RetentionSettings = Field(default_factory=RetentionSettings)

    attachments: AttachmentSettings = Field(default_factory=AttachmentSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, _FieldsOnlyEnv(settings_cls), TomlConfigSettingsSource(settings_cls))

    def path(self, relative: str) -> Path:
        """Resolve a configured path against the project root (absolute paths stay)."""
        candidate = Path(relative)
        return candidate if candidate.is_absolute() else PROJECT_ROOT / candidate


def _known(values: dict[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    """`values` without the keys `model` does not declare, at every level of groups."""
    kept: dict[str, Any] = {}
    for key, value in values.items():
        field = model.model_fields.get(key)
        if field is None:
            continue
        section = _section_of(field.annotation)
        if isinstance(value, dict) and section is not None:
            value = _known(value, section)
        elif isinstance(value, dict) and get_origin(field.annotation) is dict:
            item = _section_of(get_args(field.annotation)[1])
            if item is not None:
                value = {name: _known(v, item) if isinstance(v, dict) else v
                         for name, v in value.items()}
        kept[key] = value
    return kept


def _section_of(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


class _FieldsOnlyEnv(EnvSettingsSource):
    """The environment, keeping only variables that name a setting.

    Files and explicit values are strict, but the environment is shared with other programs:
    a variable such as `DATABASE__PASSWORD` meant for another tool is ignored, as before.
    """

    def __call__(self) -> dict[str, Any]:
        return _known(super().__call__(), self.settings_cls)


def _problem(error: Any) -> str:
    key = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key"
    if error["type"] == "literal_error":
        return f"{key}: expected one of {error['ctx']['expected']}, got {error['input']!r}"
    return f"{key}: {error['msg']}"


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Read the settings; `overrides` win over environment and file (used by tests and CLI).

    Raises:
        SettingsError: a key no setting declares, or a value it refuses, naming the file and
            the dotted key (`config/crocevia.toml: api.prot: unknown key`).
    """
    source = Path(config_file) if config_file is not None else DEFAULT_CONFIG_FILE
    try:
        if config_file is not None:

            class _FromFile(Settings):
                model_config = SettingsConfigDict(toml_file=str(config_file))

            return _FromFile(**overrides)
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError("; ".join(f"{_shown(source)}: {_problem(e)}"
                                      for e in exc.errors())) from None


def _shown(path: Path) -> str:
    """The file relative to the project when it is inside it (shorter messages)."""
    try:
        return str(path.resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)
