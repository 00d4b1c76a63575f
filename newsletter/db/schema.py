"""Every table of the program as SQLAlchemy Core metadata: what the Alembic baseline
creates, on PostgreSQL and on SQLite alike.

It mirrors the SQLite schema scripts (ledger.py, suppressions.py, readers/store.py,
sources/feedcache.py), which keep making a new SQLite file as before; a test checks that
the two agree. Text columns stay text (dates and times are ISO strings, as in SQLite), so
both databases hold and compare the same values.
"""

from __future__ import annotations

from sqlalchemy import (
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    text,
)

metadata = MetaData()


def _text(name: str, *, default: str | None = None, nullable: bool = False,
          primary_key: bool = False) -> Column[str]:
    return Column(name, Text, nullable=nullable, primary_key=primary_key,
                  server_default=None if default is None else text(f"'{default}'"))


issues = Table(
    "issues", metadata,
    _text("issue_id", primary_key=True), _text("list_id"), _text("date"), _text("articles"),
    _text("state", default="sending"), _text("note", default=""), _text("created"))

issue_variants = Table(
    "issue_variants", metadata,
    _text("issue_id"), _text("topics"), _text("articles"), _text("created"),
    PrimaryKeyConstraint("issue_id", "topics"))

issue_articles = Table(
    "issue_articles", metadata,
    _text("issue_id"), _text("article_id"), _text("data"),
    PrimaryKeyConstraint("issue_id", "article_id"))

deliveries = Table(
    "deliveries", metadata,
    _text("issue_id"), _text("email"), _text("message_id"), _text("status"),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    _text("reply", default=""), _text("created"), _text("updated"),
    PrimaryKeyConstraint("issue_id", "email"),
    Index("deliveries_status", "issue_id", "status"),
    Index("deliveries_message_id", "message_id"))

suppressions = Table(
    "suppressions", metadata,
    _text("list_id"), _text("email"), _text("reason"), _text("created"),
    _text("evidence", default="{}"),
    PrimaryKeyConstraint("list_id", "email"))

events = Table(
    "events", metadata,
    _text("event_id", primary_key=True), _text("source"), _text("kind"), _text("email"),
    _text("list_id", default=""), _text("issue_id", default=""), _text("status", default=""),
    _text("diagnostic", default=""), _text("received"),
    Index("events_reader", "email", "kind", "received"),
    Index("events_issue", "issue_id", "kind"))

resubscriptions = Table(
    "resubscriptions", metadata,
    _text("list_id"), _text("email"), _text("reason"), _text("evidence"), _text("suppressed"),
    _text("lifted"), _text("note", default=""))

webhook_tokens = Table(
    "webhook_tokens", metadata, _text("token", primary_key=True), _text("seen"))

readers = Table(
    "readers", metadata,
    _text("list_id"), _text("email"), _text("address"), _text("origin"), _text("state"),
    _text("name", nullable=True), _text("topics", nullable=True),
    _text("timezone", nullable=True), _text("paused_until", nullable=True),
    _text("nonce", nullable=True), _text("consent", default="{}"), _text("created"),
    _text("updated"),
    PrimaryKeyConstraint("list_id", "email"),
    Index("readers_email", "email"),
    Index("readers_pending", "updated", sqlite_where=text("state = 'pending'"),
          postgresql_where=text("state = 'pending'")))

confirmation_mails = Table(
    "confirmation_mails", metadata, _text("email", primary_key=True), _text("sent"))

forgotten = Table(
    "forgotten", metadata, _text("digest", primary_key=True), _text("created"))

forgotten_complaints = Table(
    "forgotten_complaints", metadata, _text("digest", primary_key=True), _text("created"))

feed_cache = Table(
    "feed_cache", metadata,
    _text("url", primary_key=True), _text("etag", nullable=True),
    _text("last_modified", nullable=True), Column("body", LargeBinary, nullable=False),
    _text("fetched_at"), _text("base_url", nullable=True))

feed_entries = Table(
    "feed_entries", metadata,
    _text("id", primary_key=True), _text("first_seen"), _text("last_seen"))

feed_aliases = Table(
    "feed_aliases", metadata,
    _text("id"), _text("alias"), _text("alias_feed"), _text("last_seen"),
    PrimaryKeyConstraint("id", "alias"))

# Secrets every machine must share (the unsubscribe links' key): with PostgreSQL there is
# no file beside the ledger that all of them see.
secrets = Table(
    "secrets", metadata, _text("name", primary_key=True), _text("value"), _text("created"))


# The index on a delivery's key (the 20 hex digits before the '@' of its Message-ID),
# written exactly as the lookup in suppressions.py is, in each dialect's words, so that
# the database uses it. Made by the baseline migration.
DELIVERY_KEY_INDEX = {
    "sqlite": "CREATE INDEX IF NOT EXISTS deliveries_key ON deliveries "
              "(substr(message_id, instr(message_id, '@') - 20, 20))",
    "postgresql": "CREATE INDEX IF NOT EXISTS deliveries_key ON deliveries "
                  "(substr(message_id, strpos(message_id, '@') - 20, 20))",
}
