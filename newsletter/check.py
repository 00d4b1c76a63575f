"""`newsletter check`: what inboxes punish, found before anyone gets the issue.

Runs on one sample message per issue (rendered, built and signed as for real): HTML size
against Gmail's clipping, links, images, preheader, subject, the plain-text part, the
unsubscribe link and headers (one-click needs an https link that `serve` accepts), and the
DKIM signature checked with dkimpy, independently of the code that made it (a warning when
there is no key).
"""

from __future__ import annotations

import base64
import datetime as dt
import re
from dataclasses import dataclass
from email import message_from_bytes, policy
from typing import Literal
from urllib.parse import parse_qs, urlsplit

import lxml.html
from cryptography.hazmat.primitives import serialization

from newsletter.dkim import DkimSigner
from newsletter.errors import NewsletterError, Problem
from newsletter.fastmime import MessageTemplate
from newsletter.message import personal_fields
from newsletter.models import Subscriber, SubscriberList
from newsletter.render import RenderedIssue
from newsletter.secret import unsubscribe_secret
from newsletter.settings import Settings
from newsletter.unsubscribe import read_token

GMAIL_CLIPS_AT = 102 * 1024
WARN_SIZE = 80 * 1024
SUBJECT_WARN = 78
# No inbox shows more than about 78 characters of a subject (phones about 40); news
# headlines rarely pass 100. Past 200, over twice what any inbox can show, the subject is not
# a headline but a paragraph or markup that a feed put in its title: an error, not style.
SUBJECT_MAX = 200
PREHEADER_MAX = 150

Level = Literal["error", "warning"]


@dataclass(frozen=True)
class Finding:
    level: Level
    what: str
    fix: str = ""

    def __str__(self) -> str:
        return f"{self.level}: {self.what}" + (f" — {self.fix}" if self.fix else "")


class CheckFailed(NewsletterError):
    """The issue has problems that would hurt delivery; `send --force` sends anyway."""

    exit_code = 1


def check_message(rendered: RenderedIssue, message: bytes, unsubscribe_url: str,
                  signer: DkimSigner | None) -> list[Finding]:
    """Every problem found in one subscriber's `message` of the issue."""
    findings: list[Finding] = []
    msg = message_from_bytes(message, policy=policy.default)
    html = msg.get_body(("html",))
    text = msg.get_body(("plain",))
    html_source = html.get_content() if html is not None else ""
    text_source = text.get_content() if text is not None else ""
    size = len(html_source.encode("utf-8"))
    if size >= GMAIL_CLIPS_AT - 2048:
        findings.append(Finding("error", f"the HTML is {size / 1024:.0f} KB: Gmail clips it "
                                "at about 102 KB and hides the rest, unsubscribe link included",
                                "use fewer headlines or a lighter template"))
    elif size >= WARN_SIZE:
        findings.append(Finding("warning", f"the HTML is {size / 1024:.0f} KB, close to "
                                "Gmail's ~102 KB clipping limit"))
    findings += _links_and_images(html_source, unsubscribe_url)
    findings += _preheader_and_subject(html_source, str(msg["Subject"] or ""))
    lead = rendered.issue.lead.title
    if lead not in " ".join(text_source.split()):
        findings.append(Finding("error", f"the plain-text part lacks the lead, {lead!r}",
                                "print issue.lead.title in digest.txt"))
    if unsubscribe_url not in text_source:
        findings.append(Finding("warning", "the plain-text part has no unsubscribe link",
                                "print subscriber.unsubscribe_url in digest.txt"))
    if not msg["List-Unsubscribe"] or msg["List-Unsubscribe-Post"] != \
            "List-Unsubscribe=One-Click":
        findings.append(Finding("error", "List-Unsubscribe or List-Unsubscribe-Post missing"))
    if signer is not None and not _dkim_verifies(message, signer):
        findings.append(Finding("error", "the DKIM signature does not verify",
                                "check dkim.domain, dkim.selector and the key"))
    return findings


def _links_and_images(source: str, unsubscribe_url: str) -> list[Finding]:
    findings = []
    try:
        tree = lxml.html.document_fromstring(source or "<html></html>")
    except (ValueError, lxml.etree.ParserError):
        return [Finding("error", "the HTML part cannot be parsed")]
    hrefs = [a.get("href") for a in tree.iter("a")]
    for href in hrefs:
        target = (href or "").strip()
        if not target or target == "#":
            findings.append(Finding("error", "a link has an empty href",
                                    "give every <a> an absolute https URL"))
        elif target.lower().startswith("http:"):
            findings.append(Finding("warning", f"link over plain http: {target}",
                                    "use https"))
        elif not re.match(r"^(https:|mailto:|tel:)", target, re.IGNORECASE):
            findings.append(Finding("error", f"relative link {target!r}: it cannot work in an "
                                    "email", "use an absolute https URL"))
    if unsubscribe_url not in hrefs:
        findings.append(Finding("error", "the HTML has no unsubscribe link",
                                "link subscriber.unsubscribe_url in the footer"))
    for img in tree.iter("img"):
        src = img.get("src") or "?"
        if img.get("alt") is None:
            findings.append(Finding("error", f"image without alt text: {src}",
                                    "add alt (alt=\"\" for decoration)"))
        if not img.get("width"):
            findings.append(Finding("warning", f"image without a width attribute: {src}",
                                    "Outlook shows it at full size without one"))
    return findings


def _preheader_and_subject(source: str, subject: str) -> list[Finding]:
    findings = []
    match = re.search(r'<div class="preheader"[^>]*>(.*?)</div>', source, re.S)
    preheader = " ".join(re.sub(r"<[^>]+>", "", match.group(1)).split()) if match else ""
    if not preheader:
        findings.append(Finding("error", "no preheader (the line inboxes show after the "
                                "subject)", 'add a hidden <div class="preheader">'))
    elif len(preheader) > PREHEADER_MAX:
        findings.append(Finding("warning", f"the preheader is {len(preheader)} characters; "
                                f"inboxes show about {PREHEADER_MAX}"))
    if len(subject) > SUBJECT_MAX:
        findings.append(Finding("error", f"the subject is {len(subject)} characters, over "
                                f"{SUBJECT_MAX}: inboxes show about {SUBJECT_WARN}, so the "
                                "lead's headline is likely a paragraph or broken feed data",
                                "shorten the lead article's title (or the list title), or "
                                "leave that article out"))
    elif len(subject) > SUBJECT_WARN:
        findings.append(Finding("warning", f"the subject is {len(subject)} characters; phones "
                                f"show about 40 and desktops about {SUBJECT_WARN}"))
    return findings


def _dkim_verifies(message: bytes, signer: DkimSigner) -> bool:
    import dkim as dkimpy

    public = signer.key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    record = f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}".encode()
    expected = f"{signer.selector}._domainkey.{signer.domain}.".encode()

    def dns(name: bytes, timeout: int = 5) -> bytes:
        return record if name == expected else b""

    return bool(dkimpy.verify(message, dnsfunc=dns))


def as_error(issue_id: str, findings: list[Finding]) -> CheckFailed:
    return CheckFailed(problems=[
        Problem(f"{issue_id}: {f.what}", fix=f.fix or None) for f in findings
        if f.level == "error"
    ] + [Problem(f"{issue_id}: send it anyway with --force, or fix the above first")])


def check_issue(rendered: RenderedIssue, lst: SubscriberList, settings: Settings,
                signer: DkimSigner | None, now: dt.datetime) -> list[Finding]:
    """Build the issue for its first active reader (or a stand-in) and check that message."""
    newsletter = settings.newsletter
    reader = next((s for s in lst.subscribers if s.status == "active"), None) or Subscriber(
        email=f"reader@{newsletter.sender_domain}")
    # A secret that cannot be read or stored is a `ConfigError` here: `--force` cannot
    # make such links work, so `send` stops on it as `check` does.
    secret = unsubscribe_secret(settings)
    message = MessageTemplate(rendered, newsletter, now, signer=signer, secret=secret,
                              bounces=settings.bounces.address).build(reader)
    url = personal_fields(newsletter, lst.id, reader, secret).unsubscribe_url
    findings = _one_click(message.data, newsletter.base_url, secret, lst.id, reader.email)
    if signer is None:
        findings.append(Finding("warning", "no DKIM key is set: unsigned mail is often junked "
                                "or refused (fine if your relay signs for you)",
                                "run `newsletter dkim keygen` and set dkim.domain, "
                                "dkim.selector and dkim.private_key"))
    return check_message(rendered, message.data, url, signer) + findings


def _one_click(message: bytes, base_url: str, secret: str, list_id: str,
               email: str) -> list[Finding]:
    """Errors that stop RFC 8058 one-click unsubscribe from working for this message."""
    if not base_url.lower().startswith("https://"):
        return [Finding("error", f"the unsubscribe link is not https ({base_url}): mail "
                        "clients offer one-click unsubscribe only for https links (RFC 8058)",
                        "set newsletter.base_url to the https address of `newsletter serve`")]
    header = str(message_from_bytes(message, policy=policy.default)["List-Unsubscribe"] or "")
    https = [u for u in re.findall(r"<([^>]*)>", header) if u.lower().startswith("https:")]
    query = parse_qs(urlsplit(https[0]).query) if len(https) == 1 else {}
    if read_token(secret, (query.get("t") or [""])[0]) != (list_id, email):
        return [Finding("error", "the List-Unsubscribe header has no https link that "
                        "`newsletter serve` would accept for this reader")]
    return []
