"""Configuration: one Settings class read from `TLSRPT_*` environment variables.

Nested groups use `__` (`TLSRPT_INGEST__MAX_BATCH_ITEMS`). An optional file named by
`TLSRPT_ENV_FILE` (dotenv format) is read too; the environment wins. Settings are built
once in the entry point (`load_settings`) and passed down; nothing is read at import time.
Invalid values stop the start with one readable line per problem (`SettingsError`).
"""

from __future__ import annotations

import ipaddress
import os
import re
from email.utils import parseaddr
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.tlsrpt.report import submitter_domain


def default_data_dir() -> Path:
    """Where the embedded database lives when `TLSRPT_DATA_DIR` is unset."""
    if os.name == "posix" and os.geteuid() == 0:
        return Path("/var/lib/tlsrpt")
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "tlsrpt"


def _split_csv(value: Any) -> Any:
    """Lists come from the environment as comma-separated text."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class DatabaseSettings(BaseModel):
    pool_min_size: int = Field(default=2, ge=1)
    pool_max_size: int = Field(default=10, ge=1)
    connect_timeout_seconds: float = Field(default=10.0, gt=0)
    # How long a request (or loop) waits for a pooled connection before it gives up: a
    # database outage then answers 503 with Retry-After in seconds, not a hung request.
    acquire_timeout_seconds: float = Field(default=2.0, gt=0)


class IngestSettings(BaseModel):
    # 32 MiB fits a batch of the maximum length with long failure details.
    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    max_batch_items: int = Field(default=10_000, ge=1)
    # Clocks of MTAs drift; a result from further in the future than this is refused.
    max_future_seconds: int = Field(default=300, ge=0)


class RetentionSettings(BaseModel):
    # Aggregated results older than this are deleted; ingest refuses older timestamps.
    results_days: int = Field(default=30, ge=2)
    # Built reports (their JSON and deliveries) are kept this long for audit.
    reports_days: int = Field(default=30, ge=1)
    # Reports others sent us are kept this long after they were first received.
    inbound_days: int = Field(default=400, ge=1)


def split_nameserver(entry: str) -> tuple[str, str]:
    """`IP`, `IP:PORT` or `[IPv6]:PORT` to (host, port text); port "" when absent."""
    if entry.startswith("["):
        host, _, port = entry[1:].partition("]")
        return host, port.removeprefix(":")
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        return host, port
    return entry, ""


class DnsSettings(BaseModel):
    # Empty: the system resolver (/etc/resolv.conf). Entries are `IP` or `IP:PORT`
    # (`[v6]:PORT` for IPv6 with a port).
    nameservers: Annotated[list[str], NoDecode] = Field(default_factory=list)
    timeout_seconds: float = Field(default=5.0, gt=0)
    max_concurrency: int = Field(default=64, ge=1)
    cache_seconds: int = Field(default=300, ge=0)

    _split = field_validator("nameservers", mode="before")(_split_csv)

    @field_validator("nameservers")
    @classmethod
    def _check_nameservers(cls, value: list[str]) -> list[str]:
        for entry in value:
            host, port = split_nameserver(entry)
            try:
                ipaddress.ip_address(host)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or IP:PORT") from None
            if port and not (port.isdigit() and 0 < int(port) < 65536):
                raise ValueError(f"{entry!r} has an invalid port")
        return value


class ReportSettings(BaseModel):
    organization_name: str = "TLSRPT reporter"
    # An email address or a URI, RFC 8460 §4.4 `contact-info`; its domain is the submitter.
    contact_info: str = "tlsrpt-noreply@localhost"
    send_success_only_days: bool = True
    # A temporary DNS failure (SERVFAIL, timeout) of `_smtp._tls.<domain>` is retried with
    # doubling delays from this one, for up to dns_retry_max_hours, then given up.
    dns_retry_initial_seconds: float = Field(default=300.0, gt=0)
    dns_retry_max_hours: float = Field(default=24.0, gt=0)

    @field_validator("contact_info")
    @classmethod
    def _check_contact(cls, value: str) -> str:
        value = value.strip()
        if "@" in value and ":" not in value.split("@", 1)[0]:
            _, addr = parseaddr(value)
            local, _, domain = addr.rpartition("@")
            if not local or not domain or ("." not in domain and domain != "localhost"):
                raise ValueError(f"{value!r} is not an email address")
            value = addr
        else:
            parts = urlsplit(value)
            if not parts.scheme or not (parts.netloc or parts.path):
                raise ValueError(f"{value!r} is neither an email address nor a URI")
        try:
            # The report submitter (RFC 8460 §5.1, §5.3) is the domain of contact-info.
            submitter_domain(value)
        except ValueError as exc:
            raise ValueError(f"{value!r} names no usable submitter domain: {exc}") from None
        return value


class SmtpSecurity(StrEnum):
    NONE = "none"
    STARTTLS = "starttls"
    TLS = "tls"


class SmtpSettings(BaseModel):
    host: str = "localhost"
    port: int = Field(default=25, gt=0, lt=65536)
    security: SmtpSecurity = SmtpSecurity.STARTTLS
    username: str | None = None
    password: SecretStr | None = None
    timeout_seconds: float = Field(default=60.0, gt=0)
    # Extra CA bundle to trust for the relay's certificate.
    ca_file: Path | None = None


# RFC 5322 §3.2.3 dot-atom local part: what an envelope sender can carry unquoted.
_ATEXT_LOCAL_PART = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*\Z"
)


class MailSettings(BaseModel):
    # The From address of outgoing reports; default: derived from contact-info.
    from_: str | None = Field(default=None, alias="from")
    # The envelope sender (MAIL FROM) of report mails, naming the delivery so a bounce
    # finds it: `bounces@example.com` sends as `bounces+<id>.<tag>@example.com`, a local
    # part with `{id}` (`bounces-{id}@example.com`) puts them there. Unset: the From.
    bounce_address: str | None = None

    model_config = {"populate_by_name": True}

    @field_validator("bounce_address")
    @classmethod
    def _check_bounce_address(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        local, at, domain = value.rpartition("@")
        if not at or not local or not domain or "." not in domain:
            raise ValueError(f"{value!r} is not local-part@domain")
        if "{id}" in domain or local.count("{id}") > 1:
            raise ValueError("{id} may stand once, in the local part")
        if "{id}" not in local and "+" in local:
            raise ValueError("the local part may not hold '+' (the id goes after it)")
        if not _ATEXT_LOCAL_PART.match(local.replace("{id}", "1")):
            raise ValueError("the local part must be dot-separated atext (RFC 5322 §3.2.3)")
        # The widest id and its tag must fit the 64 octets of RFC 5321 §4.5.3.1.1.
        widest = (local if "{id}" in local else local + "+{id}").replace("{id}", "9" * 35)
        if len(widest) > 64:
            raise ValueError("the local part leaves no room for the delivery id and its tag")
        return value


class BounceSettings(BaseModel):
    # A mailto: rua whose reports bounced permanently (RFC 3464 DSN, 5.x.x) on this many
    # different UTC days, with no delivered report in between, is suppressed ...
    suppress_after: int = Field(default=3, ge=1)
    # ... for this many days.
    suppress_days: int = Field(default=30, ge=1)
    # A sent report that did not bounce within this long counts as delivered: it clears
    # the rua's count of bounce days.
    settle_hours: float = Field(default=6.0, gt=0)


class DkimSettings(BaseModel):
    selector: str | None = None
    private_key_file: Path | None = None


class HttpsSettings(BaseModel):
    # CIDRs exempt from the SSRF guard (for example a partner on a private network).
    allowed_networks: Annotated[list[ipaddress.IPv4Network | ipaddress.IPv6Network], NoDecode] = (
        Field(default_factory=list)
    )
    ca_file: Path | None = None
    verify_certificates: bool = True
    timeout_seconds: float = Field(default=30.0, gt=0)

    _split = field_validator("allowed_networks", mode="before")(_split_csv)


class DeliverySettings(BaseModel):
    retry_initial_seconds: float = Field(default=300.0, gt=0)
    retry_factor: float = Field(default=2.0, ge=1.0)
    retry_max_hours: float = Field(default=24.0, gt=0)
    lease_seconds: int = Field(default=300, ge=5)
    concurrency: int = Field(default=32, ge=1)
    # Deliveries claimed per round of the delivery loop.
    batch_size: int = Field(default=200, ge=1)
    # DKIM signing (dkimpy, its RSA done by OpenSSL: ~2 ms a mail) runs in this many worker
    # processes; 0 signs in the service process. 1 takes ~2 ms of CPU a mail off the
    # delivery loop at a small per-mail hand-over cost; more rarely pays on two cores.
    signing_processes: int = Field(default=0, ge=0)


class SchedulerSettings(BaseModel):
    # Time after midnight UTC before a day is closed: lets late MTAs flush their counts.
    grace_seconds: int = Field(default=900, ge=0)
    # Deliveries of a day are spread over this window after closing (RFC 8460 §4.1).
    send_window_seconds: int = Field(default=4 * 3600, ge=0)
    poll_seconds: float = Field(default=30.0, gt=0)
    # A day's build not finished within this long is taken over by another instance.
    job_lease_seconds: int = Field(default=1800, ge=10)
    # On SIGTERM/SIGINT, sends in flight get this long to finish; the rest are picked up
    # again after their lease expires.
    stop_timeout_seconds: float = Field(default=20.0, ge=0)


class InboundSettings(BaseModel):
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    # Cap on inflated report size, counted while inflating (gzip bombs).
    max_inflated_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    max_policies: int = Field(default=10_000, ge=1)
    max_failure_details: int = Field(default=100_000, ge=1)
    # Recipient addresses accepted by the LMTP listener; empty accepts any.
    lmtp_recipients: Annotated[list[str], NoDecode] = Field(default_factory=list)

    _split = field_validator("lmtp_recipients", mode="before")(_split_csv)
    # Where others send reports about our domains, for the records `tlsrpt dns-check`
    # suggests: a mailbox this service reads (LMTP, IMAP) ...
    rua_address: str | None = None
    # ... and/or an `inbound` token: rua=https://<TLSRPT_PUBLIC_URL>/v1/tlsrpt/<token>.
    # The token is published in DNS by design, yet it is kept out of logs.
    rua_token: SecretStr | None = None

    @field_validator("rua_address")
    @classmethod
    def _check_rua_address(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        local, at, domain = value.strip().removeprefix("mailto:").rpartition("@")
        if not at or not local or "." not in domain:
            raise ValueError(f"{value!r} is not local-part@domain")
        return f"{local}@{domain.lower()}"


class ImapSecurity(StrEnum):
    NONE = "none"
    STARTTLS = "starttls"
    TLS = "tls"


class ImapSettings(BaseModel):
    """The mailbox that `rua=mailto:` reports land in (read over IMAP); no host: off."""

    host: str | None = None
    # Default: 993 for implicit TLS, 143 otherwise.
    port: int | None = Field(default=None, gt=0, lt=65536)
    # `none` sends the password in clear: allowed only to a loopback address.
    security: ImapSecurity = ImapSecurity.TLS
    # Extra CA bundle to trust for the server's certificate.
    ca_file: Path | None = None
    user: str | None = None
    password: SecretStr | None = None
    # A file holding the password (a container secret); its trailing newline is ignored.
    password_file: Path | None = None
    folder: str = "INBOX"
    # Stored reports are moved here; mails that hold no valid report to invalid_folder.
    done_folder: str = "TLSRPT/done"
    invalid_folder: str = "TLSRPT/invalid"
    # IDLE re-checks at least this often; without IDLE the mailbox is polled this often.
    poll_seconds: float = Field(default=60.0, gt=0)
    timeout_seconds: float = Field(default=60.0, gt=0)

    @property
    def enabled(self) -> bool:
        return bool(self.host)

    @property
    def effective_port(self) -> int:
        if self.port is not None:
            return self.port
        return 993 if self.security is ImapSecurity.TLS else 143

    def secret(self) -> str:
        """The password, from PASSWORD or PASSWORD_FILE."""
        if self.password is not None:
            return self.password.get_secret_value()
        if self.password_file is not None:
            return self.password_file.read_text().rstrip("\r\n")
        return ""

    @model_validator(mode="after")
    def _check(self) -> ImapSettings:
        if not self.host:
            return self
        if self.security is ImapSecurity.NONE and not _is_loopback(self.host):
            raise ValueError(
                f"security 'none' sends the password in clear; {self.host!r} is not a "
                "loopback address (use tls or starttls)"
            )
        if not self.user:
            raise ValueError("TLSRPT_IMAP__USER is required when TLSRPT_IMAP__HOST is set")
        if self.password is not None and self.password_file is not None:
            raise ValueError("set TLSRPT_IMAP__PASSWORD or TLSRPT_IMAP__PASSWORD_FILE, not both")
        if self.password is None and self.password_file is None:
            raise ValueError("TLSRPT_IMAP__PASSWORD or TLSRPT_IMAP__PASSWORD_FILE is required")
        if len({self.folder, self.done_folder, self.invalid_folder}) != 3:
            raise ValueError("folder, done_folder and invalid_folder must differ")
        return self


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]")).is_loopback
    except ValueError:
        return False


class AlertSettings(BaseModel):
    """Alerts the service raises itself, and where it sends them (README "Alerts")."""

    # False: no evaluation rounds (metrics are still refreshed).
    enabled: bool = True
    # https: URLs that get each digest as a signed JSON POST (Slack/Mattermost `text`).
    webhook_urls: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # HMAC-SHA256 key of the X-TLSRPT-Signature header; unset: webhooks are not signed.
    webhook_secret: SecretStr | None = None
    # Addresses that get each digest by mail through the relay (TLSRPT_SMTP__*).
    mail_to: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Incoming failures: a received report (seen within incoming_hours) with at least
    # this many failed sessions and this share of failures for one of our domains.
    incoming_min_failures: int = Field(default=1, ge=1)
    incoming_min_share: float = Field(default=0.0, ge=0, le=1)
    incoming_hours: float = Field(default=24.0, gt=0)
    # Same-day spike: a policy domain with at least spike_min_sessions in the last hour,
    # whose failure rate is at least spike_min_rate and spike_factor times its baseline
    # (the spike_baseline_hours before that hour).
    spike_min_sessions: int = Field(default=50, ge=1)
    spike_min_rate: float = Field(default=0.2, gt=0, le=1)
    spike_factor: float = Field(default=3.0, ge=1)
    spike_baseline_hours: int = Field(default=24, ge=1, le=168)
    # Silence: no result for silence_minutes, while results arrived in at least
    # silence_min_active_hours of the 24 hours before.
    silence_minutes: float = Field(default=60.0, gt=0)
    silence_min_active_hours: int = Field(default=6, ge=1, le=24)
    # Delivery trouble: failed deliveries and undelivered days this recent.
    delivery_hours: float = Field(default=48.0, gt=0)
    # Notifications that fail temporarily are retried with doubling delays for this long.
    retry_initial_seconds: float = Field(default=60.0, gt=0)
    retry_max_hours: float = Field(default=24.0, gt=0)
    # Alerts named one by one in a digest's text; the rest are counted.
    digest_max_items: int = Field(default=20, ge=1)
    # At most one digest this often: an alert storm is a few messages, not thousands.
    digest_min_interval_seconds: float = Field(default=300.0, ge=0)

    _split = field_validator("webhook_urls", "mail_to", mode="before")(_split_csv)

    @field_validator("webhook_urls")
    @classmethod
    def _check_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            parts = urlsplit(url)
            if parts.scheme != "https" or not parts.hostname:
                raise ValueError(f"{url!r} is not an https: URL")
        return value

    @field_validator("mail_to")
    @classmethod
    def _check_mail_to(cls, value: list[str]) -> list[str]:
        for address in value:
            local, at, domain = address.rpartition("@")
            if not at or not local or not domain or any(c in address for c in " <>\r\n"):
                raise ValueError(f"{address!r} is not an email address")
        return value


class MetricsSettings(BaseModel):
    # True: /metrics answers only a bearer token with the `metrics` (or admin) scope.
    require_token: bool = False


class UiSettings(BaseModel):
    # Signs the web pages' session cookies; unset: a random key kept in the database, shared
    # by every instance (set it to rotate: every session then ends).
    session_key: SecretStr | None = Field(default=None, min_length=32)
    # A signed-in browser must sign in again after this long.
    session_hours: float = Field(default=12.0, gt=0, le=24 * 30)
    # Mark the cookie Secure even on plain http: set it behind a TLS-terminating proxy
    # (the service trusts no proxy headers, so it can not see the browser's https).
    secure_cookie: bool = False


class LogFormat(StrEnum):
    # auto: text when the log goes to a terminal (a person reads it), JSON otherwise.
    AUTO = "auto"
    JSON = "json"
    TEXT = "text"


class Settings(BaseSettings):
    """Every setting of the service. Environment: `TLSRPT_<FIELD>`, `TLSRPT_<GROUP>__<FIELD>`."""

    model_config = SettingsConfigDict(
        env_prefix="TLSRPT_",
        env_nested_delimiter="__",
        extra="ignore",
        validate_default=True,
    )

    # Unset: an embedded PostgreSQL under data_dir (pgserver).
    database_url: SecretStr | None = None
    data_dir: Path = Field(default_factory=default_data_dir)
    log_level: str = "INFO"
    log_format: LogFormat = LogFormat.AUTO
    # False keeps collecting and building reports but sends nothing.
    send_reports: bool = True
    # The https base URL others reach this service at (for the rua `tlsrpt dns-check`
    # suggests), e.g. https://tlsrpt.example.org
    public_url: str | None = None
    # How long a token's scopes are cached per process: revocations reach every instance
    # at once (LISTEN/NOTIFY); this bounds a revocation whose notification was missed.
    auth_cache_seconds: float = Field(default=10.0, ge=0, le=3600)

    database: DatabaseSettings = DatabaseSettings()
    ingest: IngestSettings = IngestSettings()
    retention: RetentionSettings = RetentionSettings()
    dns: DnsSettings = DnsSettings()
    report: ReportSettings = ReportSettings()
    smtp: SmtpSettings = SmtpSettings()
    mail: MailSettings = MailSettings()
    bounces: BounceSettings = BounceSettings()
    dkim: DkimSettings = DkimSettings()
    https: HttpsSettings = HttpsSettings()
    delivery: DeliverySettings = DeliverySettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    inbound: InboundSettings = InboundSettings()
    imap: ImapSettings = ImapSettings()
    alerts: AlertSettings = AlertSettings()
    metrics: MetricsSettings = MetricsSettings()
    ui: UiSettings = UiSettings()

    @field_validator("log_level")
    @classmethod
    def _check_level(cls, value: str) -> str:
        value = value.upper()
        if value not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return value

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parts = urlsplit(value.strip())
        if parts.scheme != "https" or not parts.hostname or parts.query or parts.fragment:
            raise ValueError(f"{value!r} is not an https://host[/path] URL")
        return value.strip().rstrip("/")

    @model_validator(mode="after")
    def _check_pool(self) -> Settings:
        if self.database.pool_min_size > self.database.pool_max_size:
            raise ValueError("database.pool_min_size is larger than database.pool_max_size")
        return self


class SettingsError(Exception):
    """Invalid configuration; `lines` has one readable line per problem."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def _env_name(loc: tuple[int | str, ...]) -> str:
    return "TLSRPT_" + "__".join(str(part).upper() for part in loc if not isinstance(part, int))


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment (and `TLSRPT_ENV_FILE`); raise SettingsError."""
    env_file = os.environ.get("TLSRPT_ENV_FILE")
    try:
        return Settings(_env_file=env_file, **overrides)  # type: ignore[call-arg]
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_url=False):
            name = _env_name(err["loc"]) if err["loc"] else "configuration"
            lines.append(f"{name}: {err['msg']}")
        raise SettingsError(lines) from None
