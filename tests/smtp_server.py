"""A real SMTP server on loopback (aiosmtpd) for delivery tests."""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Received:
    sender: str
    recipients: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        return message_from_bytes(self.data, policy=policy.default)  # type: ignore[return-value]


@dataclass
class Sink:
    """Accepts every message, except as told to misbehave:

    - `refuse`: recipients answered 550 (permanent);
    - `rcpt_replies`: recipient → the reply to its RCPT instead of 250, e.g.
      "452 4.2.2 mailbox full" (the remote a real Postfix relays to refuses with these);
    - `defer`: recipient → how many times to answer 451 (temporary) before accepting;
    - `drop_at`: message numbers (1-based, counting DATA commands) at which the server
      closes the connection instead of answering;
    - `on_message`: called after each accepted message (the crash test kills there);
    - `refuse_data`: recipient (or "*" for all) → the reply to give after DATA instead of
      250, e.g. "554 5.7.1 rejected by policy";
    - `refuse_sender`: the reply to MAIL FROM instead of 250.
    """

    received: list[Received] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    defer: dict[str, int] = field(default_factory=dict)
    drop_at: set[int] = field(default_factory=set)
    logins: list[str] = field(default_factory=list)
    sessions: list[int] = field(default_factory=list)  # id of the session of each message
    data_commands: int = 0
    on_message: Any = None
    refuse_data: dict[str, str] = field(default_factory=dict)
    refuse_sender: str | None = None
    helos: list[str] = field(default_factory=list)  # the EHLO/HELO name of each message

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str,
                          mail_options: list[str]) -> str:
        if self.refuse_sender is not None:
            return self.refuse_sender
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        if address in self.refuse:
            return "550 5.1.1 mailbox unavailable"
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        if self.defer.get(address, 0) > 0:
            self.defer[address] -= 1
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.data_commands += 1
        if self.data_commands in self.drop_at:
            server.transport.close()
            return "421 closing"  # never reaches the client: the connection is gone
        refusal = next((self.refuse_data[r] for r in (*envelope.rcpt_tos, "*")
                        if r in self.refuse_data), None)
        if refusal is not None:
            return refusal
        self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos),
                                      envelope.original_content))
        self.sessions.append(id(session))
        self.helos.append(session.host_name)
        if self.on_message is not None:
            self.on_message(self)
        return "250 Message accepted"

    def authenticator(self, username: str, password: str):
        def check(server: Any, session: Any, envelope: Any, mechanism: str,
                  auth_data: Any) -> AuthResult:
            if (isinstance(auth_data, LoginPassword) and auth_data.login.decode() == username
                    and auth_data.password.decode() == password):
                self.logins.append(username)
                return AuthResult(success=True)
            # handled=False makes aiosmtpd answer 535; the default leaves the client hanging.
            return AuthResult(success=False, handled=False)
        return check


def start_server(sink: Sink, *, port: int, tls_context: ssl.SSLContext | None = None,
                 implicit_tls: bool = False, auth: tuple[str, str] | None = None) -> Controller:
    kwargs: dict[str, Any] = {}
    if auth:
        kwargs["authenticator"] = sink.authenticator(*auth)
        kwargs["auth_require_tls"] = not implicit_tls and tls_context is not None
    if tls_context is not None and implicit_tls:
        kwargs["ssl_context"] = tls_context
    elif tls_context is not None:
        kwargs["tls_context"] = tls_context
        kwargs["require_starttls"] = True
    controller = Controller(sink, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    return controller
