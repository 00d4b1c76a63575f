"""Mail as it comes back to the bounce address, built as real servers build it: a
Postfix-style DSN (RFC 3464), a Yahoo-style ARF complaint (RFC 5965), an out-of-office
auto-reply (RFC 3834), a reader's mailto unsubscribe, a stranger's mail.

Each builder returns the raw bytes a mail server would deliver to the mailbox.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

DATE = format_datetime(dt.datetime(2026, 11, 24, 8, 0, tzinfo=dt.UTC))


def _crlf(text: str) -> bytes:
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode()


def dsn(to: str, recipient: str, *, status: str = "5.1.1", action: str = "failed",
        diagnostic: str = "550 5.1.1 <{r}>: Recipient address rejected: User unknown",
        original_message_id: str = "<x@example.com>", mta: str = "mx.example.org") -> bytes:
    """A delivery status notification to `to` (the VERP Return-Path) about `recipient`,
    as Postfix writes it."""
    boundary = "DSN." + hashlib.sha256(f"{to}{recipient}{status}{action}".encode()).hexdigest()[:16]
    text = "could not be delivered" if action == "failed" else f"was {action}"
    diagnostic = diagnostic.format(r=recipient)
    return _crlf(f"""\
Return-Path: <>
Delivered-To: {to}
Date: {DATE}
From: MAILER-DAEMON@{mta} (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: {to}
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="{boundary}"
Message-Id: {make_msgid(domain=mta)}

This is a MIME-encapsulated message.

--{boundary}
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host {mta}.

I'm sorry to have to inform you that your message {text}
to one or more recipients.

<{recipient}>: host {mta} said: {diagnostic}

--{boundary}
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; {mta}
X-Postfix-Queue-ID: 4ABCD1234
X-Postfix-Sender: rfc822; {to}
Arrival-Date: {DATE}

Final-Recipient: rfc822; {recipient}
Original-Recipient: rfc822;{recipient}
Action: {action}
Status: {status}
Remote-MTA: dns; {mta}
Diagnostic-Code: smtp; {diagnostic}

--{boundary}
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

Return-Path: <{to}>
From: The Test Brief <brief@example.com>
To: {recipient}
Subject: The Test Brief
Message-ID: {original_message_id}
Date: {DATE}

--{boundary}--
""")


def arf(return_path: str, recipient: str, *, message_id: str = "<x@example.com>",
        fbl: str = "feedback@bounce.example.com") -> bytes:
    """A Yahoo-style ARF abuse report, sent to the feedback-loop address, carrying the
    original message (whose Return-Path is our VERP address)."""
    boundary = "ARF." + hashlib.sha256(f"{return_path}{recipient}".encode()).hexdigest()[:16]
    return _crlf(f"""\
Return-Path: <>
From: Yahoo! Mail AntiSpam Feedback <feedback@arf.mail.yahoo.com>
To: {fbl}
Subject: FW: The Test Brief
Date: {DATE}
Message-ID: {make_msgid(domain="arf.mail.yahoo.com")}
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report;
\tboundary="{boundary}"

--{boundary}
Content-Type: text/plain; charset="US-ASCII"
Content-Transfer-Encoding: 7bit

This is an email abuse report for an email message received from IP 192.0.2.1 on
{DATE}.

--{boundary}
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: Yahoo!-Mail-Feedback/2.0
Version: 1
Original-Mail-From: <{return_path}>
Original-Rcpt-To: <{recipient}>
Received-Date: {DATE}
Reported-Domain: example.com
Authentication-Results: mta1.mail.yahoo.com  from=example.com; domainkeys=neutral

--{boundary}
Content-Type: message/rfc822
Content-Disposition: inline

Return-Path: <{return_path}>
From: The Test Brief <brief@example.com>
To: {recipient}
Subject: The Test Brief
Message-ID: {message_id}
Date: {DATE}
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8

Today's news.

--{boundary}--
""")


def auto_reply(to: str, sender: str) -> bytes:
    """An out-of-office reply (RFC 3834) to the Return-Path."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = "Out of office: The Test Brief"
    msg["Date"] = DATE
    msg["Message-ID"] = make_msgid(domain="example.com")
    msg["Auto-Submitted"] = "auto-replied"
    msg["Precedence"] = "auto_reply"
    msg.set_content("I am away until Monday and will read your mail then.")
    return bytes(msg)


def mail(to: str, sender: str, subject: str, body: str = "Hello.\n", **headers: str) -> bytes:
    """Plain mail: a reader's mailto unsubscribe, or a stranger writing to the address."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = DATE
    msg["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2].strip(">") or "x.test")
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return bytes(msg)
