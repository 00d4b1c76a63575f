"""Settings: `config/newsletter.yaml`, overridden by `NEWSLETTER_*` variables and `.env`."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from newsletter.addresses import InvalidAddress, normalize_address, split_mailbox
from newsletter.blame import (
    ENV_FILE,
    ENV_PREFIX,
    check_dotenv,
    env_name,
    is_variable,
    unparsable,
    where,
)
from newsletter.db.url import Database, is_url, parse_database
from newsletter.errors import ConfigError, Problem
from newsletter.inbound.settings import BouncesSection, WebhooksSection
from newsletter.readers.settings import SignupSection
from newsletter.settingsbase import _one_line, _Section, is_loopback
from newsletter.yamlfile import YamlDocument, load_yaml

DEFAULT_CONFIG = Path("config/newsletter.yaml")
CONFIG_VARIABLE = "NEWSLETTER_CONFIG"  # read by the CLI, before .env is
_TIME = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?"
_DNS_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")
_BASE_URL = re.compile(rf"https?://{_LABEL}(?:\.{_LABEL})*(?::\d{{1,5}})?"
                       r"(?:/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*)?")


class NewsletterSection(_Section):
    title: str = "The Morning Brief"
    sender: str = "The Morning Brief <brief@example.com>"
    base_url: str = "https://example.com"
    unsubscribe_mailto: str = "unsubscribe@example.com"
    postal_address: str | None = None
    # Dates and template strings of the email; a list's `locale:` overrides it.
    locale: str = "en_GB"

    @field_validator("locale")
    @classmethod
    def _locale(cls, value: str) -> str:
        return check_locale(value)

    @field_validator("sender")
    @classmethod
    def _sender(cls, value: str) -> str:
        try:
            split_mailbox(value)
        except InvalidAddress as err:
            raise ValueError(f"not a valid sender ({err})") from err
        return value

    @field_validator("unsubscribe_mailto")
    @classmethod
    def _mailto(cls, value: str) -> str:
        try:
            return normalize_address(value.removeprefix("mailto:"))
        except InvalidAddress as err:
            raise ValueError(f"not a valid address ({err})") from err

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an absolute URL such as https://example.com")
        if not _BASE_URL.fullmatch(value):
            # It goes into List-Unsubscribe as <URL>: a '>' or a space would end it there.
            raise ValueError("must be a plain https://host[:port][/path] URL in ASCII, with no "
                             "query, fragment, spaces, quotes or <> (an international "
                             "domain in its xn-- form)")
        return value.rstrip("/")

    @property
    def sender_name(self) -> str:
        return split_mailbox(self.sender)[0]

    @property
    def sender_address(self) -> str:
        return split_mailbox(self.sender)[1]

    @property
    def sender_domain(self) -> str:
        return self.sender_address.rpartition("@")[2]


class ArticlesSection(_Section):
    paths: list[Path] = Field(default_factory=lambda: [Path("articles")])
    headlines: int = Field(8, ge=1, le=50)
    max_age_days: int = Field(2, ge=0, le=3650)
    # RSS or Atom feeds: URLs, or paths to feed files.
    feeds: list[str] = Field(default_factory=list)
    # Seconds to wait for a feed's server before warning and going on without it.
    feed_timeout: float = Field(10, gt=0, le=300)
    # An issue needs at least this many new articles (not in an earlier issue, not older
    # than max_age_days). A day with fewer is a quiet day: with quiet_day "skip", `send`
    # says "nothing new for LIST on DATE; no issue sent" and exits 0 (the scheduler logs
    # it as info); with "error" it is an error (exit 2), as before this setting existed.
    min_new: int = Field(1, ge=1, le=100)
    quiet_day: Literal["skip", "error"] = "skip"


class LinksSection(_Section):
    # UTM tags added to article links; none by default. `{list}` and `{date}` are filled in.
    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None

    def tags(self, list_id: str, date: str) -> dict[str, str]:
        values = {"utm_source": self.utm_source, "utm_medium": self.utm_medium,
                  "utm_campaign": self.utm_campaign}
        return {key: value.replace("{list}", list_id).replace("{date}", date)
                for key, value in values.items() if value}


# The slowest rate a limit may ask for: one message every 1000 s. Below it a send would
# take weeks, and 1/rate overflows a sleep (1e-300 messages a second).
MIN_RATE = 0.001


def check_rate(value: float) -> float:
    """A rate limit in messages a second: 0 (none) or at least `MIN_RATE`."""
    if 0 < value < MIN_RATE:
        raise ValueError(f"must be 0 (no limit) or at least {MIN_RATE:g} messages a second "
                         f"(one every {1 / MIN_RATE:g} s)")
    return value


class DeliverySection(_Section):
    backend: Literal["file", "smtp", "console"] = "file"
    outbox: Path = Path("outbox")
    # A 4xx reply is tried this many times in a run, waiting retry_backoff seconds, then
    # twice that, and so on (never more than an hour); what still fails
    # is left for the next `send`.
    retries: int = Field(3, ge=1, le=20)
    retry_backoff: float = Field(5.0, ge=0, le=3600)
    # This many failed recipients in a row pause the run, to protect the sender's reputation.
    pause_after_failures: int = Field(20, ge=1)
    # Messages per second over all connections; 0 means as fast as the server takes them.
    rate_limit: float = Field(0, ge=0)

    @field_validator("rate_limit")
    @classmethod
    def _rate(cls, value: float) -> float:
        return check_rate(value)


class WorkersSection(_Section):
    """`newsletter worker` and `send --queue` (with a PostgreSQL database)."""

    batch: int = Field(500, ge=1, le=100_000)  # deliveries per job
    lease_seconds: float = Field(120, ge=5, le=86_400)  # a dead worker's batch is taken over


class SmtpSection(_Section):
    host: str = "localhost"

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("is empty; give the mail server's name, e.g. smtp.example.com")
        if any(char.isspace() for char in value):
            raise ValueError("must be one host name or address, without spaces")
        name, colon, port = value.rpartition(":")
        if colon and port.isdigit() and ":" not in name:
            raise ValueError(f"holds a port: set smtp.host to {name} and smtp.port to {port}")
        if value.startswith("[") and value.endswith("]"):
            raise ValueError(f"write the address without brackets: {value[1:-1]}")
        return value
    port: int = Field(587, ge=1, le=65535)
    security: Literal["none", "starttls", "ssl"] = "starttls"
    username: str | None = None
    password: SecretStr | None = None
    timeout: float = Field(30, gt=0, le=600)
    # A private CA bundle, for relays with an in-house certificate.
    ca_file: Path | None = None
    connections: int = Field(1, ge=1, le=32)
    rate_limit_per_connection: float = Field(0, ge=0)
    # Servers cap the messages per connection; reconnect before reaching theirs.
    messages_per_connection: int = Field(100, ge=1)
    # Reconnects in a row after dropped connections before the run gives up.
    reconnects: int = Field(3, ge=0, le=20)
    # The EHLO name; default: this machine's fully qualified name (socket.getfqdn()).
    helo: str | None = None

    @field_validator("helo")
    @classmethod
    def _helo(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not _DNS_NAME.fullmatch(value):
            raise ValueError("must be a DNS name of letters, digits, '-' and '.', "
                             "e.g. mail.example.com")
        return value.rstrip(".")

    @field_validator("rate_limit_per_connection")
    @classmethod
    def _rate(cls, value: float) -> float:
        return check_rate(value)


class DkimSection(_Section):
    domain: str | None = None
    selector: str | None = None
    # A PEM file's path, or the PEM itself (only from NEWSLETTER_DKIM__PRIVATE_KEY or .env).
    private_key: SecretStr | None = None

    @field_validator("domain", "selector")
    @classmethod
    def _dns_name(cls, value: str | None) -> str | None:
        # Both are written into the DKIM-Signature header as d= and s=: a ';' or a space
        # would add tags of its own.
        if not value:
            return None  # unset; `load_signer` says what DKIM still needs
        if not _DNS_NAME.fullmatch(value):
            raise ValueError("must be a DNS name of letters, digits, '-' and '.' (an "
                             "international domain in its xn-- form), e.g. example.com")
        return value


class UnsubscribeSection(_Section):
    # Signs unsubscribe links; only from NEWSLETTER_UNSUBSCRIBE__SECRET or .env.
    secret: SecretStr | None = None


class ServeSection(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8025, ge=1, le=65535)


class ScheduleSection(_Section):
    time: str = "07:00"
    timezone: str = "Europe/London"
    # A run that could not start on time (machine asleep or down) still goes out when the
    # scheduler is back within this many minutes; after that the issue is skipped as stale.
    misfire_grace_minutes: int = Field(60, ge=1, le=24 * 60)
    jobs: Path = Path("outbox/scheduler.sqlite3")

    @field_validator("time", mode="before")
    @classmethod
    def _time(cls, value: Any) -> Any:
        # YAML 1.1 reads an unquoted 07:00 as the base-60 number 420.
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            value = f"{value // 60:02d}:{value % 60:02d}"
        if not isinstance(value, str) or not _TIME.match(value):
            raise ValueError('must be a 24-hour time "HH:MM", e.g. "07:00"')
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        check_timezone(value)
        return value

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def hour_minute(self) -> tuple[int, int]:
        hour, minute = self.time.split(":")
        return int(hour), int(minute)


def check_timezone(name: str) -> ZoneInfo:
    """The zone called `name`; `ValueError` with the fix when there is none.

    Only names in the tz database's list count: `ZoneInfo("US")` would fail with an
    `IsADirectoryError`, and `localtime` or `Factory` are not places.
    """
    if name not in _known_zones():
        raise ValueError(
            "unknown time zone; use an IANA name such as Europe/London or America/New_York")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as err:
        raise ValueError(f"time zone data for {name} cannot be read ({err})") from err


@functools.cache
def _known_zones() -> frozenset[str]:
    return frozenset(available_timezones()) - {"Factory", "localtime", "posixrules"}


def check_locale(name: str) -> str:
    """`name` as Babel spells it (`de-DE` → `de_DE`); `ValueError` when Babel has no data."""
    from babel import Locale, UnknownLocaleError

    try:
        return str(Locale.parse(name.replace("-", "_")))
    except (UnknownLocaleError, ValueError, TypeError) as err:
        raise ValueError("unknown locale; use a name such as en_GB, en_US, de_DE or fr_FR"
                         ) from err


class Settings(BaseSettings):
    """Every setting of a run. Build it with `load_settings`, then pass sections down."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        env_file=ENV_FILE,
        env_file_encoding="utf-8",
        extra="forbid",
        hide_input_in_errors=True,
        allow_inf_nan=False,
    )

    newsletter: NewsletterSection = Field(default_factory=NewsletterSection)
    articles: ArticlesSection = Field(default_factory=ArticlesSection)
    subscribers: Path = Path("config/subscribers.yaml")
    templates: Path = Path("templates")
    links: LinksSection = Field(default_factory=LinksSection)
    delivery: DeliverySection = Field(default_factory=DeliverySection)
    # A SQLite file (the embedded default) or postgresql://user@host/dbname; `ledger` is its
    # old name, still accepted for a SQLite path. Read it through `database_config`.
    database: str | None = None
    ledger: Path = Path("outbox/newsletter.sqlite3")
    workers: WorkersSection = Field(default_factory=WorkersSection)
    smtp: SmtpSection = Field(default_factory=SmtpSection)
    schedule: ScheduleSection = Field(default_factory=ScheduleSection)
    dkim: DkimSection = Field(default_factory=DkimSection)
    unsubscribe: UnsubscribeSection = Field(default_factory=UnsubscribeSection)
    serve: ServeSection = Field(default_factory=ServeSection)
    bounces: BouncesSection = Field(default_factory=BouncesSection)
    webhooks: WebhooksSection = Field(default_factory=WebhooksSection)
    signup: SignupSection = Field(default_factory=SignupSection)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML file arrives as init arguments; the environment must win over it.
        return env_settings, dotenv_settings, init_settings

    @field_validator("*", mode="before")
    @classmethod
    def _no_control_characters(cls, value: Any, info: ValidationInfo) -> Any:
        return _one_line(cls, value, info)

    @field_validator("database")
    @classmethod
    def _database(cls, value: str | None) -> str | None:
        if value is not None:
            parse_database(value)  # ValueError says what to write instead
        return value

    @model_validator(mode="after")
    def _one_database(self) -> Settings:
        if self.database is not None and not is_url(self.database):
            if "ledger" in self.model_fields_set and Path(self.database) != self.ledger:
                raise ValueError("database and ledger name two different files; ledger is "
                                 "the old name of database: keep one")
            self.ledger = Path(self.database)
        return self

    @property
    def database_config(self) -> Database:
        """The database every table lives in: PostgreSQL by URL, else the SQLite file."""
        if self.database is not None and is_url(self.database):
            return parse_database(self.database)
        return Database(path=self.ledger)

    def masked(self) -> dict[str, Any]:
        """The effective settings as plain data, secrets replaced by asterisks."""
        data = self.model_dump(mode="json")
        if self.database is not None:
            data["database"] = self.database_config.display()
        return data


SECRET_KEYS: set[tuple[str, ...]] = {
    ("smtp", "password"), ("unsubscribe", "secret"), ("bounces", "imap", "password"),
    ("webhooks", "mailgun_signing_key"), ("webhooks", "postmark_password"),
    ("webhooks", "sendgrid_public_key")}


def _holds(data: dict[str, Any], loc: tuple[str, ...]) -> bool:
    for part in loc[:-1]:
        data = data.get(part)  # type: ignore[assignment]
        if not isinstance(data, dict):
            return False
    return loc[-1] in data


def load_settings(config_path: Path = DEFAULT_CONFIG) -> Settings:
    """Load and validate settings; every problem found becomes one line of a `ConfigError`."""
    if not config_path.exists():
        raise ConfigError("settings file not found", file=config_path,
                          fix="create it (see README) or pass --config PATH")
    doc = load_yaml(config_path, "settings file")
    data = doc.data if doc.data is not None else {}
    if not isinstance(data, dict):
        raise ConfigError("the settings file must be a mapping of sections", file=config_path,
                          line=1, fix="start with keys such as 'newsletter:' and 'delivery:'")
    problems = list(doc.duplicate_keys)
    for loc in sorted(SECRET_KEYS):
        if _holds(data, loc):
            problems.append(Problem(
                "secrets don't belong in the settings file", config_path,
                doc.line_of(loc), ".".join(loc),
                f"remove it and set {env_name(loc)} in the environment or .env"))
    url = data.get("database")
    if isinstance(url, str) and is_url(url) and urlsplit(url).password is not None:
        problems.append(Problem(
            "secrets don't belong in the settings file: the database URL holds a password",
            config_path, doc.line_of(("database",)), "database",
            "remove it from the URL and set NEWSLETTER_DATABASE (the whole URL) in the "
            "environment or .env, or use PGPASSWORD or ~/.pgpass"))
    if problems:
        raise ConfigError(problems=problems)
    check_dotenv()
    try:
        settings = Settings(**data)
    except ValidationError as err:
        raise ConfigError(problems=[_problem(e, doc) for e in err.errors()]) from err
    except SettingsError as err:
        raise ConfigError(problems=[unparsable(err)]) from err
    problems = _cross_checks(settings, doc)
    if problems:
        raise ConfigError(problems=problems)
    return settings


def _problem(error: Any, doc: YamlDocument) -> Problem:
    loc = tuple(error["loc"])
    if error["type"] == "extra_forbidden" and str(loc[0]).upper() == CONFIG_VARIABLE:
        what, fix = "only the environment can choose the settings file", (
            f"remove it from .env; use --config PATH or export {CONFIG_VARIABLE}")
    elif error["type"] == "extra_forbidden" and is_variable(loc):
        what, fix = "unknown setting", (
            f"name a section and a key, as in {ENV_PREFIX}SMTP__HOST; sections: "
            + ", ".join(Settings.model_fields))
    elif error["type"] == "extra_forbidden":
        what, fix = "unknown setting", _allowed_keys(loc)
    else:
        what, fix = error["msg"].removeprefix("Value error, "), None
    file, line, field = where(loc, doc)
    return Problem(what, file, line, field, fix)


def _cross_checks(settings: Settings, doc: YamlDocument) -> list[Problem]:
    """Rules across settings that no single field can check."""
    problems = []
    smtp = settings.smtp
    if smtp.username and smtp.security == "none" and not is_loopback(smtp.host):
        # AUTH PLAIN and LOGIN send the password in the clear: anyone on the path reads it.
        file, line, field = where(("smtp", "security"), doc)
        problems.append(Problem(
            f"would send the password unencrypted to {smtp.host} (smtp.username is set and "
            "smtp.security is none)", file, line, field,
            "use smtp.security: starttls (port 587) or ssl (port 465); 'none' with a login "
            "is only allowed to localhost"))
    problems.extend(_bounce_checks(settings, doc))
    return problems


def _bounce_checks(settings: Settings, doc: YamlDocument) -> list[Problem]:
    problems = []
    bounces = settings.bounces
    if bounces.imap and bounces.maildir:
        file, line, field = where(("bounces", "maildir"), doc)
        problems.append(Problem("bounces.imap and bounces.maildir are both set", file, line,
                                field, "keep one: the mailbox is read over IMAP or from a "
                                "local Maildir"))
    imap = bounces.imap
    if imap and imap.security == "none" and not is_loopback(imap.host):
        file, line, field = where(("bounces", "imap", "security"), doc)
        problems.append(Problem(
            f"would read the bounce mailbox unencrypted from {imap.host}", file, line, field,
            "use security: ssl (port 993) or starttls (port 143); 'none' is only allowed "
            "to localhost"))
    return problems


def _allowed_keys(loc: tuple[Any, ...]) -> str:
    model: type[BaseModel] = Settings
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            break
        model = annotation
    return "allowed keys here: " + ", ".join(model.model_fields)
