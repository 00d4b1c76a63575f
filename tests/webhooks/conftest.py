"""The webhook tests' fixtures: a project after a real `send` (made once per module, its
outbox copied into each test's project), served by the real app with every webhook
configured, and the keys the providers would sign with."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email import policy as email_policy
from pathlib import Path
from typing import Any

import pytest

from newsletter.ledger import SqliteLedger
from newsletter.settings import load_settings
from newsletter.suppressions import Suppression
from newsletter.web import create_app
from tests.conftest import (
    ARTICLES,
    ISSUE_DATE,
    REPO,
    SETTINGS_YAML,
    SUBSCRIBERS_YAML,
    Project,
)
from tests.web_server import Answer, call, running
from tests.webhooks.signers import (
    MAILGUN_KEY,
    POSTMARK_PASSWORD,
    TOPIC,
    Keys,
)

READERS = ("ada@example.com", "linus@example.com", "zoe@example.org")
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return Keys.make(tmp_path_factory.mktemp("keys"))


@dataclass
class Hooked:
    project: Project
    base: str
    keys: Keys
    message_ids: dict[str, str]
    log: list[logging.LogRecord] = field(default_factory=list)

    def post(self, provider: str, body: bytes | dict[str, Any] | list[Any],
             headers: dict[str, str] | None = None) -> Answer:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return call(f"{self.base}/webhooks/{provider}", "POST", data,
                    {**JSON, **(headers or {})})

    def suppressions(self) -> list[Suppression]:
        ledger = SqliteLedger(self.project.outbox / "newsletter.sqlite3")
        try:
            return ledger.suppressions()
        finally:
            ledger.close()

    def of(self, email: str) -> list[Suppression]:
        return [s for s in self.suppressions() if s.email == email]

    def events(self) -> list[Any]:
        ledger = SqliteLedger(self.project.outbox / "newsletter.sqlite3")
        try:
            return ledger.events()
        finally:
            ledger.close()


def configure(project: Project, keys: Keys, monkeypatch: pytest.MonkeyPatch | None = None
              ) -> None:
    project.write("config/newsletter.yaml", SETTINGS_YAML + f"""\
webhooks:
  ses_certificate: {keys.sns_cert}
  ses_topic_arns: ["{TOPIC}"]
  postmark_username: hooks
  max_age_seconds: 300
""")
    if monkeypatch is None:
        return
    monkeypatch.setenv("NEWSLETTER_WEBHOOKS__MAILGUN_SIGNING_KEY", MAILGUN_KEY)
    monkeypatch.setenv("NEWSLETTER_WEBHOOKS__POSTMARK_PASSWORD", POSTMARK_PASSWORD)
    monkeypatch.setenv("NEWSLETTER_WEBHOOKS__SENDGRID_PUBLIC_KEY", keys.sendgrid_public)


@pytest.fixture(scope="module")
def sent_outbox(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Path:
    """The outbox (ledger, sent mail) of a real `send` of the test project, made once."""
    proj = Project(tmp_path_factory.mktemp("sent"))
    shutil.copytree(REPO / "templates", proj.templates)
    proj.write("config/subscribers.yaml", SUBSCRIBERS_YAML)
    for name, text in ARTICLES.items():
        proj.write(f"articles/{name}", text)
    configure(proj, keys)
    result = proj.run("send", "--date", ISSUE_DATE)
    assert result.returncode == 0, result.stderr
    return proj.outbox


def sent_message_ids(project: Project) -> dict[str, str]:
    found = {}
    for email in READERS:
        eml = project.outbox / "mail" / "morning-brief" / ISSUE_DATE / f"{email}.eml"
        found[email] = str(message_from_bytes(eml.read_bytes(),
                                              policy=email_policy.default)["Message-ID"])
    return found


@contextlib.contextmanager
def serving(project: Project, keys: Keys, sent_outbox: Path,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[Hooked]:
    configure(project, keys, monkeypatch)
    shutil.copytree(sent_outbox, project.outbox, dirs_exist_ok=True)
    ids = sent_message_ids(project)
    with running(create_app(load_settings(project.settings))) as base:
        # After the server set up its logging (which resets uvicorn's handlers).
        hooked = Hooked(project, base, keys, ids)
        handler = logging.Handler()
        handler.emit = hooked.log.append  # type: ignore[method-assign]
        logger = logging.getLogger("uvicorn.error")
        logger.addHandler(handler)
        try:
            yield hooked
        finally:
            logger.removeHandler(handler)
    # Whatever a test sent, the server never failed on it nor logged a traceback.
    assert not [r for r in hooked.log if r.exc_info], [r.getMessage() for r in hooked.log]


@pytest.fixture
def hooked(project: Project, keys: Keys, sent_outbox: Path,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[Hooked]:
    """The project after a real `send`, served with every webhook configured."""
    with serving(project, keys, sent_outbox, monkeypatch) as hooked:
        yield hooked


def hard(s: Suppression) -> bool:
    return s.reason == "hard-bounce" and s.list_id == "*"


