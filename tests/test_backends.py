"""One contract, every delivery backend: each message delivered once, bytes unchanged."""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Callable, Iterator
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from newsletter.delivery import BACKENDS, DeliveryBackend, create_backend
from newsletter.errors import ConfigError
from newsletter.message import OutgoingMessage, build_message
from newsletter.models import Subscriber
from newsletter.render import Renderer
from newsletter.settings import Settings, SmtpSection
from tests.conftest import REPO
from tests.smtp_server import Sink, free_port, start_server
from tests.test_render import ISSUE

READERS = [Subscriber(email=f"reader{i}@example.com", name=f"Reader {i}") for i in range(3)]
Delivered = Callable[[], list[bytes]]


@pytest.fixture(scope="module")
def messages() -> list[OutgoingMessage]:
    settings = Settings()
    rendered = Renderer(REPO / "templates", settings.newsletter).render(ISSUE)
    now = dt.datetime(2026, 11, 24, 7, tzinfo=dt.UTC)
    return [build_message(rendered, r, settings.newsletter, now) for r in READERS]


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest,
            tmp_path: Path) -> Iterator[tuple[DeliveryBackend, Delivered]]:
    """A live backend of each kind, and a way to read back what it delivered."""
    name = request.param
    if name == "file":
        settings = Settings(delivery={"outbox": tmp_path})
        yield create_backend(name, settings), lambda: [
            p.read_bytes() for p in sorted(tmp_path.rglob("*.eml"))]
    elif name == "console":
        stream = io.StringIO()
        yield create_backend(name, Settings(), stream), lambda: [
            line.encode() for line in stream.getvalue().splitlines()]
    else:
        sink, port = Sink(), free_port()
        controller = start_server(sink, port=port)
        settings = Settings(smtp=SmtpSection(host="127.0.0.1", port=port, security="none"))
        try:
            yield create_backend(name, settings), lambda: [r.data for r in sink.received]
        finally:
            controller.stop()


def test_each_message_is_delivered_once_with_its_result(
        backend: tuple[DeliveryBackend, Delivered], messages: list[OutgoingMessage]) -> None:
    live, delivered = backend
    with live:
        results = [live.send(m) for m in messages]
    assert [(r.recipient, r.message_id, r.status) for r in results] == [
        (m.recipient, m.message_id, "sent") for m in messages]
    out = delivered()
    assert len(out) == len(messages)
    if live.name == "console":
        assert all(m.recipient.encode() in line for m, line in zip(messages, out, strict=True))
        return
    by_id = {str(message_from_bytes(data, policy=policy.default)["Message-ID"]): data
             for data in out}
    for m in messages:
        # aiosmtpd hands over the data without the final CRLF of the DATA terminator
        assert by_id[m.message_id].rstrip(b"\r\n") == m.data.rstrip(b"\r\n")


def test_unknown_backend_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="use one of: file, smtp, console"):
        create_backend("pigeon", Settings())
