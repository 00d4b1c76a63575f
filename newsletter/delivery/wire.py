"""One SMTP mail transaction on an open smtplib connection, in as few round trips as the
server allows.

smtplib's `sendmail` waits for a reply to each of MAIL FROM, RCPT TO and DATA before sending
the next (four round trips a message) and dot-stuffs every body with a regular expression.
Here, where the server offers PIPELINING (RFC 2920), the three commands go out in one write
and their three replies are read after it; the body and its final dot go in one more write:
two round trips. When the caller knows the next message, its three commands follow this
body's final dot before the reply is awaited (RFC 2920 3.1: message content may begin a
group), so a run of messages costs one round trip each. The body is dot-stuffed with one
`bytes.replace` (the message is CRLF already: fastmime builds it so). Without PIPELINING
each command waits for its reply, as smtplib does.

What comes back is a `Reply`: the step that answered and its code; the caller decides whose
fault a refusal is. A 421 at any step raises `Closing` (a drop), and a connection that goes
away raises smtplib's `SMTPServerDisconnected` (smtplib's own reply reader is used, with its
timeouts and line limits).
"""

from __future__ import annotations

import smtplib
from dataclasses import dataclass
from typing import Literal

CLOSING = 421  # "service not available, closing transmission channel"
Step = Literal["mail", "rcpt", "data", "sent"]


class Closing(smtplib.SMTPServerDisconnected):
    """The server answered 421 and closes the connection: handled as a drop."""

    def __init__(self, code: int, reply: bytes) -> None:
        super().__init__(f"{code} {reply.decode('utf-8', 'replace')}")
        self.smtp_code, self.smtp_error = code, reply


@dataclass(frozen=True)
class Reply:
    """The answer that ended the transaction: `step` "sent" with 250 when the server took
    the message, else the step whose reply refused it. `ahead`: the next message's
    commands went out behind this body (their replies are still to be read)."""

    step: Step
    code: int
    text: bytes
    ahead: bool = False

    @property
    def ok(self) -> bool:
        return self.step == "sent"


def stuff(data: bytes) -> bytes:
    """`data` dot-stuffed (RFC 5321 4.5.2) and ended with the final dot, ready to send.

    The same bytes as smtplib's `data()`: a line that starts with a dot gets another (after
    any LF, as smtplib's multi-line `^\\.` does), and a body without a final CRLF gets one.
    """
    body = data.replace(b"\n.", b"\n..")
    if body[:1] == b".":
        body = b"." + body
    return body + (b".\r\n" if body[-2:] == b"\r\n" else b"\r\n.\r\n")


def _address(address: str) -> str:
    # smtplib.quoteaddr parses the address (email.utils) on every call; a plain address,
    # which is what the send loop gives, only needs its angle brackets.
    if "<" in address or " " in address or '"' in address:
        return smtplib.quoteaddr(address)
    return f"<{address}>"


def envelope(conn: smtplib.SMTP, sender: str, recipient: str, size: int) -> bytes:
    """MAIL FROM, RCPT TO and DATA for one message, as smtplib would write them."""
    options = f" size={size}" if conn.does_esmtp and conn.has_extn("size") else ""
    return (f"MAIL FROM:{_address(sender)}{options}\r\n"
            f"RCPT TO:{_address(recipient)}\r\nDATA\r\n").encode("ascii")


def transact(conn: smtplib.SMTP, sender: str, recipient: str, data: bytes,
             pipelining: bool, *, opened: bool = False, then: bytes = b"") -> Reply:
    """Send one message to one recipient on `conn` (after EHLO); see the module's text.

    `opened`: this message's commands went out already, behind the previous body; only
    their replies are read. `then`: the next message's commands (`envelope`), written with
    this body when it goes (pipelining only); the caller must send that message next or
    drop the connection, since the server may have opened its DATA.
    Leaves the session after a refusal as the server left it: the caller sends RSET.
    """
    if opened or pipelining:
        if not opened:
            conn.send(envelope(conn, sender, recipient, len(data)))
        # Every reply of the group is read, whatever the first said: they are on their way,
        # and the next transaction must not read them as its own.
        mail, rcpt, data_ = _reply(conn), _reply(conn), _reply(conn)
        refusal = _refusal(mail, rcpt, data_)
        if refusal is not None:
            if data_[0] == 354:  # a server that opened DATA with no recipient: end it empty
                conn.send(b".\r\n")
                _reply(conn)
            return refusal
    else:
        commands = envelope(conn, sender, recipient, len(data))
        mail_line, rcpt_line, data_line, _ = commands.split(b"\r\n")
        for step, line, wanted in (("mail", mail_line, (250,)), ("rcpt", rcpt_line, (250, 251)),
                                   ("data", data_line, (354,))):
            conn.send(line + b"\r\n")
            code, text = _reply(conn)
            if code not in wanted:
                return Reply(step, code, text)  # type: ignore[arg-type]
    ahead = bool(then) and pipelining
    # Handed over together (`_Watched` writes the next commands after the final dot, and
    # notes there that the message has gone out whole).
    conn.send(stuff(data) + then if ahead else stuff(data))
    code, text = _reply(conn)
    return Reply("sent" if code == 250 else "data", code, text, ahead)


def _refusal(mail: tuple[int, bytes], rcpt: tuple[int, bytes],
             data: tuple[int, bytes]) -> Reply | None:
    """The first refusal among a pipelined group's replies, or None if DATA may go on."""
    if mail[0] != 250:
        return Reply("mail", *mail)
    if rcpt[0] not in (250, 251):
        return Reply("rcpt", *rcpt)
    if data[0] != 354:
        return Reply("data", *data)
    return None


def _reply(conn: smtplib.SMTP) -> tuple[int, bytes]:
    code, text = conn.getreply()
    if code == CLOSING:
        raise Closing(code, text)
    return code, text
