"""Deliver over SMTP on one connection reused for the whole run.

Each message is one transaction in two round trips where the server offers PIPELINING
(`wire.transact`), four without; when the send loop announces the next message, its
commands ride behind this message's body, so a run costs one round trip a message. The
connection's set-up (TLS, login) is smtplib's.
"""

from __future__ import annotations

import contextlib
import functools
import re
import smtplib
import socket
import ssl
from typing import Any, TextIO

from newsletter.delivery.base import (
    DeliveryBackend,
    DeliveryResult,
    MessageRefused,
    ResultStatus,
    failure_status,
)
from newsletter.delivery.wire import CLOSING, envelope, transact
from newsletter.errors import ConfigError, DeliveryError
from newsletter.message import OutgoingMessage
from newsletter.settings import Settings, SmtpSection

_PASSWORD_ENV = "NEWSLETTER_SMTP__PASSWORD"
_END = b"\r\n.\r\n"  # a body's final dot
# An enhanced status code (RFC 3463) at the start of a reply's text: class.subject.detail.
_ENHANCED = re.compile(rb"\s*([245])\.(\d{1,3})\.(\d{1,3})(?!\d)")


class _Watched(smtplib.SMTP):
    """Notes when a message has gone out whole (its final dot sent): a drop after that
    may leave the message delivered without the server's reply ever arriving."""

    message_out = False

    def send(self, s: Any) -> None:  # smtplib's own: a buffer or text
        # The final dot ends the write, or the next message's commands follow it (dot-
        # stuffing leaves no other CRLF.CRLF in a body, and commands hold none). Those are
        # a write of their own: a write that fails after the dot went out must still count
        # the message as out, or a drop there would resend it without bound.
        end = s.find(_END) if isinstance(s, bytes) else -1
        if end < 0:
            super().send(s)
            return
        end += len(_END)
        super().send(s[:end])
        self.message_out = True
        if end < len(s):
            super().send(s[end:])


class _WatchedSsl(smtplib.SMTP_SSL, _Watched):
    pass


class SmtpBackend(DeliveryBackend):
    """One SMTP connection, reused for many messages.

    MAIL FROM, RCPT TO and DATA are pipelined where the server offers it (RFC 2920). It
    reconnects after the server's per-connection limit (`smtp.messages_per_connection`)
    and after a dropped connection or a timeout, resending the message that was in flight;
    `smtp.reconnects` failed attempts in a row end the run with a `DeliveryError`.
    """

    name = "smtp"

    def __init__(self, smtp: SmtpSection, local_hostname: str) -> None:
        self.smtp = smtp
        # Given explicitly: otherwise smtplib asks DNS for this machine's name on every connect.
        self.local_hostname = local_hostname
        self.rate_per_connection = smtp.rate_limit_per_connection  # kept by the send loop
        self._conn: smtplib.SMTP | None = None
        self._sent_on_connection = 0
        self._pipelining = False
        self._announced: OutgoingMessage | None = None  # to send next (`announce`)
        self._ahead: OutgoingMessage | None = None  # whose commands are on the wire
        if smtp.username and smtp.password is None:
            raise ConfigError("smtp.username is set but there is no password",
                              field="smtp.password",
                              fix=f"set {_PASSWORD_ENV} in the environment or .env")

    @classmethod
    def from_settings(cls, settings: Settings, stream: TextIO) -> SmtpBackend:
        return cls(settings.smtp, local_hostname=helo_name(settings.smtp))

    @property
    def _where(self) -> str:
        return f"{self.smtp.host}:{self.smtp.port}"

    def open(self) -> None:
        self._conn = self._connect()
        self._sent_on_connection = 0
        self._pipelining = bool(self._conn.has_extn("pipelining"))
        sock = self._conn.sock
        with contextlib.suppress(OSError, AttributeError):
            # Each write is a whole group or a whole message, followed by a read: Nagle's
            # algorithm would only hold a message's last segment back for an ACK.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[union-attr]

    @property
    def lookahead(self) -> bool:
        return self._pipelining and self._conn is not None

    def announce(self, following: OutgoingMessage) -> None:
        self._announced = following

    def close(self) -> None:
        self._announced = None
        if self._ahead is not None:
            # The next message's DATA may be open: QUIT would be read as its text. Closing
            # the connection mid-DATA is how a transaction is abandoned; nothing is sent.
            self._abandon()
        if self._conn is not None:
            try:
                self._conn.quit()
            except (smtplib.SMTPException, OSError):
                self._conn.close()
            self._conn = None

    def send(self, message: OutgoingMessage) -> DeliveryResult:
        following, self._announced = self._announced, None
        if self._ahead is not None and self._ahead is not message:
            self._abandon()  # another message's DATA is open: never send into it
        if self._conn is not None and self._sent_on_connection >= self.smtp.messages_per_connection:
            self.close()
        drops = unconfirmed = 0
        while True:
            if self._conn is None:
                self.open()
            conn = self._conn
            assert isinstance(conn, _Watched)
            conn.message_out = False
            try:
                result = self._send(message, following)
            except (smtplib.SMTPServerDisconnected, OSError) as err:
                # Dropped or timed out mid-message: the server did not confirm it, so it goes
                # again on a new connection (at most one duplicate per connection). If it
                # had gone out whole, the server may have it: once more, never twice more
                # (a server that is always slower than smtp.timeout would get it each time).
                self._abandon()
                drops += 1
                unconfirmed += conn.message_out
                if drops > self.smtp.reconnects or unconfirmed > 1:
                    raise self._dropped(message, drops, unconfirmed, err) from err
                continue
            self._sent_on_connection += 1
            return result

    def _dropped(self, message: OutgoingMessage, drops: int, unconfirmed: int,
                 err: Exception) -> DeliveryError:
        why = err or type(err).__name__
        if unconfirmed > 1:
            return DeliveryError(
                f"the SMTP server at {self._where} took the message to {message.recipient} "
                f"{unconfirmed} times without confirming it ({why})", field="smtp.timeout",
                fix=f"it may be slower than smtp.timeout ({self.smtp.timeout:g}s): raise it, "
                    "or check the server's logs; that reader is still pending (and may get "
                    "the issue twice), everyone else not sent yet is too")
        return DeliveryError(
            f"the SMTP server at {self._where} dropped the connection {drops} times in a "
            f"row ({why})", field="smtp",
            fix="check the server's logs and limits; unsent messages stay pending for the "
                "next send")

    def _send(self, message: OutgoingMessage, following: OutgoingMessage | None
              ) -> DeliveryResult:
        # Whose fault a refusal is. A 5xx to RCPT TO is about that recipient: final, and it
        # suppresses them, unless its enhanced code says it is about a full mailbox or about
        # us (policy, blocklists, relaying: X.7.x and the other non-address classes, see
        # `_blame`), which leaves the reader to be tried again later. A 5xx to MAIL FROM is
        # about the sender, and a 5xx after DATA about the message (policy or spam 5.7.x,
        # size 552 / 5.3.4, "500 Line too long"): every reader would get the same answer,
        # so the run stops with the server's reply, and
        # nobody is marked failed or suppressed (all stay pending for the fixed re-run).
        # After DATA, the enhanced status code (RFC 3463) can say otherwise: X.1.x
        # (addressing) and X.2.0/X.2.1 (mailbox unavailable, disabled) are about the
        # recipient, for servers that check mailboxes only once they have the message, and
        # X.2.2 (full) too, but only for now; X.2.3 is the message's length ("552 5.2.3
        # Message size exceeds fixed maximum", Exchange and Gmail), so it is the message's.
        # A 4xx anywhere may work later: a temporary failure of this recipient, retried.
        # A 421 at any step is the server closing the connection (busy, shutting down, its
        # own timeout), not an answer about this reader: like a drop, the message goes again
        # on a new connection, and a server that keeps at it ends the run, everyone pending.
        conn = self._conn
        assert conn is not None
        opened = self._ahead is message
        then = b""
        if (following is not None and self._pipelining
                and self._sent_on_connection + 1 < self.smtp.messages_per_connection):
            then = envelope(conn, following.sender, following.recipient, len(following.data))
        # Until the reply is read, a DATA may be open (this message's, or the next one's
        # once its commands are out): whatever goes wrong meanwhile, `close` then drops
        # the connection instead of sending QUIT into it.
        self._ahead = following if then else (message if opened else None)
        reply = transact(conn, message.sender, message.recipient, message.data,
                         self._pipelining, opened=opened, then=then)
        self._ahead = following if reply.ahead else None
        if reply.ok:
            return DeliveryResult(message.recipient, message.message_id, "sent",
                                  "250 accepted")
        if not reply.ahead:  # else the next message's DATA may be open: RSET would be its text
            self._reset()  # the transaction is over: the next one starts clean
        code, text = reply.code, reply.text
        if reply.step == "rcpt":
            if 500 <= code < 600 and _blame(text) in ("mailbox", "other"):
                # Refused at RCPT, but not for the address: a full mailbox, or the server's
                # policy about us (a blocklist, relay denied, a rate limit): no evidence
                # against the reader, so they are tried again later and never suppressed.
                return self._failed(message, code, text, "failed-temporary")
            return self._failed(message, code, text)
        if reply.step == "mail":
            what, final = "the sender " + message.sender, 500 <= code < 600
        else:
            what = "the message"
            blame = _blame(text)
            final = 500 <= code < 600 and blame in ("none", "other")
            if blame == "mailbox":  # a full mailbox: this reader's, but only for now
                return self._failed(message, code, text, "failed-temporary")
        if final:
            raise self._refused(message, what, code, text)
        return self._failed(message, code, text)

    def _refused(self, message: OutgoingMessage, what: str, code: int,
                 text: bytes) -> MessageRefused:
        return MessageRefused(
            f"the SMTP server at {self._where} refused {what} (to {message.recipient}): "
            f"{_reply(code, text)}", field="smtp",
            fix="nobody was marked failed or suppressed and everyone is still pending: fix "
                "what the reply names (the issue's content or size, the sender), then run "
                "the same command again")

    def _failed(self, message: OutgoingMessage, code: int, reply: bytes | str,
                status: ResultStatus | None = None) -> DeliveryResult:
        return DeliveryResult(message.recipient, message.message_id,
                              status or failure_status(code), _reply(code, reply))

    def _abandon(self) -> None:
        self._ahead = None
        if self._conn is not None:
            _close_quietly(self._conn)
            self._conn = None

    def _reset(self) -> None:
        try:
            assert self._conn is not None
            self._conn.rset()
        except (smtplib.SMTPException, OSError):
            pass

    def _connect(self) -> smtplib.SMTP:
        s = self.smtp
        # Loading the CA store takes a noticeable while: only for a connection that uses it.
        context = (ssl.create_default_context(cafile=str(s.ca_file) if s.ca_file else None)
                   if s.security != "none" else None)
        conn: smtplib.SMTP | None = None
        try:
            if s.security == "ssl":
                conn = _WatchedSsl(s.host, s.port, local_hostname=self.local_hostname,
                                   timeout=s.timeout, context=context)
            else:
                conn = _Watched(s.host, s.port, local_hostname=self.local_hostname,
                                timeout=s.timeout)
            conn.ehlo()
            if s.security == "starttls":
                conn.starttls(context=context)
                conn.ehlo()
            if s.username:
                assert s.password is not None
                conn.login(s.username, s.password.get_secret_value())
            return conn
        except smtplib.SMTPAuthenticationError as err:
            _close_quietly(conn)
            reply = err.smtp_error.decode("utf-8", "replace") if isinstance(
                err.smtp_error, bytes) else str(err.smtp_error)
            raise DeliveryError(
                f"the SMTP server at {self._where} refused the login for {s.username!r} "
                f"({err.smtp_code} {' '.join(reply.split())})", field="smtp.username",
                fix=f"check smtp.username and {_PASSWORD_ENV}") from err
        except smtplib.SMTPNotSupportedError as err:
            _close_quietly(conn)
            missing = "STARTTLS" if s.security == "starttls" and "starttls" in str(err).lower() \
                else "AUTH"
            fix = ("set smtp.security to ssl or none" if missing == "STARTTLS"
                   else "remove smtp.username, or use a server that accepts logins")
            raise DeliveryError(f"the SMTP server at {self._where} does not offer {missing}",
                                field="smtp.security" if missing == "STARTTLS"
                                else "smtp.username", fix=fix) from err
        except ssl.SSLError as err:
            _close_quietly(conn)
            raise DeliveryError(
                f"TLS with the SMTP server at {self._where} failed: {err.reason or err}",
                field="smtp.security",
                fix="use security ssl for port 465 and starttls for 587; for a private CA "
                    "set smtp.ca_file") from err
        except socket.gaierror as err:
            raise DeliveryError(f"unknown SMTP host {s.host!r}", field="smtp.host",
                                fix="check smtp.host") from err
        except TimeoutError as err:
            _close_quietly(conn)
            raise DeliveryError(f"no answer from the SMTP server at {self._where} within "
                                f"{s.timeout:g}s", field="smtp.host",
                                fix="check smtp.host, smtp.port and the firewall") from err
        except smtplib.SMTPResponseException as err:
            _close_quietly(conn)
            busy = err.smtp_code == CLOSING
            raise DeliveryError(
                f"the SMTP server at {self._where} "
                + ("is not taking mail now" if busy else "refused the connection")
                + f": {_reply(err.smtp_code, err.smtp_error)}", field="smtp.host",
                fix="nothing was sent and everyone is still pending: run the same command "
                    "again later" if busy else "check smtp.host and smtp.port (is it an "
                    "SMTP server?), and the server's logs") from err
        except (smtplib.SMTPException, OSError) as err:
            _close_quietly(conn)
            if isinstance(err.__context__, TimeoutError):  # smtplib re-raises it as a drop
                raise DeliveryError(
                    f"no answer from the SMTP server at {self._where} within "
                    f"{s.timeout:g}s", field="smtp.host",
                    fix="check smtp.host, smtp.port and the firewall; raise smtp.timeout for "
                        "a slow server") from err
            reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
            raise DeliveryError(f"cannot connect to the SMTP server at {self._where}: {reason}",
                                field="smtp.host",
                                fix="check smtp.host and smtp.port, and that the server "
                                    "is running") from err


def _reply(code: int, reply: bytes | str) -> str:
    """The server's answer on one line: `554 5.7.1 Message rejected`."""
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return f"{code} {' '.join(text.split())}"


def _blame(reply: bytes | str) -> str:
    """What a 5xx's enhanced status code (RFC 3463) says the refusal is about: "address"
    (X.1.x addressing, X.2.0/X.2.1 mailbox unavailable or disabled: final, it suppresses),
    "mailbox" (X.2.2 full, X.2.4 list expansion: this reader's, but only for now), "other"
    (X.2.3 the message's length, X.3–X.7 the system, network, protocol, content or
    policy: not about the reader), or "none" (no enhanced code: the reply code decides,
    see `SmtpBackend._send`)."""
    found = _ENHANCED.match(reply.encode() if isinstance(reply, str) else reply)
    if found is None:
        return "none"
    subject, detail = int(found.group(2)), int(found.group(3))
    if subject == 1 or (subject == 2 and detail in (0, 1)):
        return "address"
    if subject == 2 and detail != 3:
        return "mailbox"
    return "other"


def _close_quietly(conn: smtplib.SMTP | None) -> None:
    if conn is not None:
        with contextlib.suppress(OSError):
            conn.close()


@functools.cache
def _fqdn() -> str:
    return socket.getfqdn()


def helo_name(smtp: SmtpSection) -> str:
    """The EHLO name: `smtp.helo`, else this machine's fully qualified name (looked up once
    a process: smtplib would ask the resolver for every connection). Relays and receivers
    check it against the connecting address; the sender's domain, used before, names
    another machine."""
    name = smtp.helo or _fqdn()
    # getfqdn() may give a bare host name or one with characters EHLO cannot carry.
    return name if name and name.isascii() and " " not in name else "localhost"
