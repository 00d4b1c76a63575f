"""The bounce mailbox over IMAP (`bounces.imap`), with the stdlib's `imaplib`.

- TLS: `ssl` is implicit TLS (993), `starttls` upgrades a plain connection (143), `none`
  is plain (the settings allow it on loopback only). The certificate is always checked,
  against the system's CAs or `ca_file`.
- LOGIN with `username` and NEWSLETTER_BOUNCES__IMAP__PASSWORD (AUTHENTICATE PLAIN when
  either is not ASCII, which LOGIN cannot carry, and the server offers it).
- Mail is named by UID, never by sequence number (which shifts when another client
  expunges), and read with BODY.PEEK so that reading marks nothing.
- Handled mail: UID MOVE to `processed_folder` (created when the server says it is
  missing); without MOVE, UID COPY then \\Deleted, and UID EXPUNGE of that UID only
  (UIDPLUS); a server without UIDPLUS keeps it marked \\Deleted for its owner to expunge
  (a plain EXPUNGE would also remove what other clients marked). Without a
  `processed_folder` it is flagged \\Seen and \\Flagged where it is, and mail carrying both
  is not read again. With `delete_processed` it is deleted instead. Mail already marked
  \\Deleted is never read. CLOSE is never sent (it expunges).
- Folder names are sent in modified UTF-7 (RFC 3501 5.1.3), quoted.
"""

from __future__ import annotations

import base64
import contextlib
import imaplib
import re
import socket
import ssl
from collections.abc import Iterator
from types import TracebackType
from typing import Any

from newsletter.errors import ConfigError, MailboxError
from newsletter.inbound.mailbox import MAX_BYTES, Mail, Unreadable, too_large
from newsletter.inbound.settings import ImapSection

PASSWORD_VARIABLE = "NEWSLETTER_BOUNCES__IMAP__PASSWORD"
_SIZE = re.compile(rb"RFC822\.SIZE (\d+)")
_UID = re.compile(rb"UID (\d+)")


def encode_folder(name: str) -> str:
    """`name` in IMAP's modified UTF-7: printable ASCII as it is ("&" as "&-"), anything
    else as "&" + base64 of UTF-16BE with "," for "/" + "-"."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            data = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(data).decode().rstrip("=").replace("/", ",")
                       + "-")
            pending.clear()

    for char in name:
        if 0x20 <= ord(char) <= 0x7E:
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    return "".join(out)


def decode_folder(name: str) -> str:
    """The readable form of a modified UTF-7 folder name (as it is, when it is not one)."""
    def one(match: re.Match[str]) -> str:
        chunk = match.group(1)
        if not chunk:
            return "&"
        try:
            data = base64.b64decode(chunk.replace(",", "/") + "=" * (-len(chunk) % 4))
            return data.decode("utf-16-be")
        except (ValueError, UnicodeDecodeError):
            return match.group(0)
    return re.sub(r"&([A-Za-z0-9+,]*)-", one, name)


def quote(text: str) -> str:
    """An IMAP quoted string (the text holds no CR, LF or NUL: callers check)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def folder_argument(name: str) -> str:
    return quote(encode_folder(name))


def server_words(data: Any) -> str:
    """What the server said, as one short printable line (it is not ours to trust)."""
    parts = data if isinstance(data, list | tuple) else [data]
    text = " ".join(p.decode("utf-8", "replace") if isinstance(p, bytes) else str(p)
                    for p in parts if p is not None)
    flat = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return flat[:197] + "..." if len(flat) > 200 else flat


class ImapMailbox:
    def __init__(self, imap: ImapSection, conn: imaplib.IMAP4, capabilities: set[str]) -> None:
        self.imap = imap
        self._conn = conn
        self._capabilities = capabilities
        self._created = False

    @property
    def name(self) -> str:
        return f"{self.imap.folder} on {self.imap.host}:{self.imap.effective_port}"

    @property
    def folder(self) -> str:
        return self.imap.folder

    @classmethod
    def connect(cls, imap: ImapSection) -> ImapMailbox:
        """Connected, logged in, `imap.folder` selected; one-line errors otherwise."""
        username, password = _credentials(imap)
        if imap.processed_folder is not None and _same_folder(imap.processed_folder,
                                                              imap.folder):
            raise ConfigError("the processed folder is the folder bounces are read from",
                              field="bounces.imap.processed_folder",
                              fix="name another folder (e.g. Processed), or set it to null "
                                  "to flag handled mail where it is")
        context = _tls_context(imap)
        where = f"{imap.host}:{imap.effective_port}"
        with _connecting(imap, where):
            if imap.security == "ssl":
                conn: imaplib.IMAP4 = imaplib.IMAP4_SSL(
                    imap.host, imap.effective_port, ssl_context=context, timeout=imap.timeout)
            else:
                conn = imaplib.IMAP4(imap.host, imap.effective_port, timeout=imap.timeout)
        try:
            with _connecting(imap, where):
                if imap.security == "starttls":
                    if "STARTTLS" not in _caps(conn.capabilities):
                        raise ConfigError(f"the IMAP server at {where} offers no STARTTLS",
                                          field="bounces.imap.security",
                                          fix="use security: ssl (usually port 993), or ask "
                                              "the server's admin to enable STARTTLS")
                    conn.starttls(ssl_context=context)
                _login(conn, username, password, where)
                typ, data = conn.capability()
                capabilities = _caps(data[0].split() if typ == "OK" and data else [])
                mailbox = cls(imap, conn, capabilities)
                mailbox._select()
            return mailbox
        except BaseException:
            with contextlib.suppress(Exception):
                conn.shutdown()
            raise

    def _select(self) -> None:
        typ, data = self._conn.select(folder_argument(self.imap.folder))
        if typ != "OK":
            known = self._folders()
            raise ConfigError(
                f"the folder {self.imap.folder!r} cannot be opened on {self.imap.host} "
                f"(the server says: {server_words(data)})", field="bounces.imap.folder",
                fix="name one of the account's folders: " + ", ".join(known[:20])
                if known else "name a folder of the account, e.g. INBOX")

    def _folders(self) -> list[str]:
        with contextlib.suppress(imaplib.IMAP4.error, OSError):
            typ, data = self._conn.list()
            if typ == "OK":
                names = []
                for item in data:
                    if isinstance(item, bytes):
                        found = re.search(rb'"((?:[^"\\]|\\.)*)"\s*$|(\S+)\s*$', item)
                        if found:
                            raw = (found.group(1) or found.group(2)).decode("ascii", "replace")
                            names.append(decode_folder(raw.replace('\\"', '"')))
                return sorted(names)
        return []

    def messages(self) -> list[Mail]:
        with self._talking("list the mail"):
            criteria = ("UNDELETED",) if self.imap.processed_folder or \
                self.imap.delete_processed else ("UNDELETED", "OR", "UNSEEN", "UNFLAGGED")
            typ, data = self._conn.uid("SEARCH", *criteria)
            self._check(typ, data, "list the mail")
            uids = sorted({int(n) for n in b" ".join(d for d in data if d).split()})
            if not uids:
                return []
            typ, data = self._conn.uid("FETCH", f"{uids[0]}:{uids[-1]}", "(RFC822.SIZE)")
            self._check(typ, data, "list the mail's sizes")
        sizes: dict[int, int] = {}
        for item in data:
            line = item[0] if isinstance(item, tuple) else item
            if isinstance(line, bytes):
                uid, size = _UID.search(line), _SIZE.search(line)
                if uid and size:
                    sizes[int(uid.group(1))] = int(size.group(1))
        return [Mail(str(uid), sizes.get(uid)) for uid in uids]

    def label(self, mail: Mail) -> str:
        return f"UID {mail.key}"

    def read(self, mail: Mail) -> bytes:
        if mail.size is not None and mail.size > MAX_BYTES:
            raise too_large(mail.size)
        with self._talking(f"read UID {mail.key}"):
            # A partial fetch: a server that lies about the size still sends no more.
            typ, data = self._conn.uid("FETCH", mail.key, f"(BODY.PEEK[]<0.{MAX_BYTES + 1}>)")
            self._check(typ, data, f"read UID {mail.key}")
        raw = next((item[1] for item in data if isinstance(item, tuple)), None)
        if not isinstance(raw, bytes):
            raise Unreadable("gone: another client moved or deleted it", gone=True)
        if len(raw) > MAX_BYTES:
            raise too_large(mail.size or len(raw))
        return raw

    def mark_handled(self, mail: Mail) -> None:
        uid = mail.key
        with self._talking(f"let go of UID {uid}"):
            if self.imap.delete_processed:
                self._delete(uid)
            elif self.imap.processed_folder is None:
                typ, data = self._conn.uid("STORE", uid, "+FLAGS.SILENT", r"(\Seen \Flagged)")
                self._check(typ, data, f"flag UID {uid}")
            elif "MOVE" in self._capabilities:
                self._into_processed("MOVE", uid)
            else:
                self._into_processed("COPY", uid)
                self._delete(uid)

    def _into_processed(self, command: str, uid: str) -> None:
        assert self.imap.processed_folder is not None
        target = folder_argument(self.imap.processed_folder)
        typ, data = self._conn.uid(command, uid, target)
        if typ != "OK" and not self._created:
            # The folder is missing ([TRYCREATE]): make it once, then try again.
            self._created = True
            created, said = self._conn.create(target)
            if created == "OK":
                with contextlib.suppress(imaplib.IMAP4.error):
                    self._conn.subscribe(target)
            else:
                data = [*data, b"; CREATE:", *said]
            typ, more = self._conn.uid(command, uid, target)
            data = data if created != "OK" else more
        self._check(typ, data, f"move UID {uid} to {self.imap.processed_folder!r}")

    def _delete(self, uid: str) -> None:
        typ, data = self._conn.uid("STORE", uid, "+FLAGS.SILENT", r"(\Deleted)")
        self._check(typ, data, f"mark UID {uid} deleted")
        if "UIDPLUS" in self._capabilities:
            typ, data = self._conn.uid("EXPUNGE", uid)
            self._check(typ, data, f"expunge UID {uid}")

    def _check(self, typ: str, data: Any, what: str) -> None:
        if typ != "OK":
            raise MailboxError(f"the IMAP server at {self.imap.host} refused to {what}: "
                               f"{server_words(data)}", field="bounces.imap")

    @contextlib.contextmanager
    def _talking(self, what: str) -> Iterator[None]:
        try:
            yield
        except (imaplib.IMAP4.error, OSError) as err:
            # imaplib.IMAP4.abort (the connection broke) is an IMAP4.error too.
            why = "no answer within the timeout" if isinstance(err, TimeoutError) else \
                server_words(str(err)) or type(err).__name__
            raise MailboxError(f"lost the IMAP connection to {self.imap.host} while trying "
                               f"to {what}: {why}", field="bounces.imap",
                               fix="run bounces fetch again: what was handled is recorded, "
                                   "the rest is still in the mailbox") from err

    def close(self) -> None:
        """LOGOUT (never CLOSE, which would expunge)."""
        with contextlib.suppress(imaplib.IMAP4.error, OSError):
            self._conn.logout()

    def __enter__(self) -> ImapMailbox:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _same_folder(a: str, b: str) -> bool:
    return a == b or (a.upper() == "INBOX" and b.upper() == "INBOX")


def _caps(words: Any) -> set[str]:
    return {(w.decode("ascii", "replace") if isinstance(w, bytes) else str(w)).upper()
            for w in words}


def _credentials(imap: ImapSection) -> tuple[str, str]:
    if not imap.username:
        raise ConfigError("bounces.imap.username is not set", field="bounces.imap.username",
                          fix="set it to the bounce mailbox's login, e.g. "
                              "bounces@bounce.example.com")
    if imap.password is None:
        raise ConfigError("the bounce mailbox's password is not set", field=PASSWORD_VARIABLE,
                          fix=f"set {PASSWORD_VARIABLE} in the environment or .env")
    password = imap.password.get_secret_value()
    for field, value in (("bounces.imap.username", imap.username),
                         (PASSWORD_VARIABLE, password)):
        if any(c in value for c in "\r\n\0"):
            raise ConfigError("holds a line break or NUL, which IMAP cannot send", field=field,
                              fix="remove it")
    return imap.username, password


def _tls_context(imap: ImapSection) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=str(imap.ca_file) if imap.ca_file else None)
    except (OSError, ssl.SSLError) as err:
        raise ConfigError(f"cannot load the CA file: {getattr(err, 'strerror', None) or err}",
                          file=imap.ca_file, field="bounces.imap.ca_file",
                          fix="point it at a PEM file of the CA that issued the server's "
                              "certificate") from err


def _login(conn: imaplib.IMAP4, username: str, password: str, where: str) -> None:
    capabilities = _caps(conn.capabilities)
    ascii_only = username.isascii() and password.isascii()
    try:
        if not ascii_only and "AUTH=PLAIN" in capabilities:
            secret = f"\0{username}\0{password}".encode()
            conn.authenticate("PLAIN", lambda _: secret)
        elif not ascii_only:
            raise ConfigError("the login or password holds non-ASCII characters, which IMAP "
                              f"LOGIN cannot send, and the server at {where} offers no "
                              "AUTHENTICATE PLAIN", field=PASSWORD_VARIABLE,
                              fix="use an ASCII password for the bounce mailbox")
        elif "LOGINDISABLED" in capabilities:
            raise ConfigError(f"the IMAP server at {where} refuses a login over a plain "
                              "connection", field="bounces.imap.security",
                              fix="use security: starttls (port 143) or ssl (port 993)")
        else:
            conn.login(quote(username), password)
    except imaplib.IMAP4.abort:
        raise
    except imaplib.IMAP4.error as err:
        raise ConfigError(f"the IMAP server at {where} refused the login of {username!r} "
                          f"({server_words(str(err))})", field="bounces.imap.username",
                          fix=f"check bounces.imap.username and {PASSWORD_VARIABLE}") from err


@contextlib.contextmanager
def _connecting(imap: ImapSection, where: str) -> Iterator[None]:
    """Turn what can go wrong before the folder is open into one line each."""
    fix_security = ("security: ssl is TLS from the first byte (usually port 993); "
                    "starttls begins plain (usually port 143)")
    try:
        yield
    except ssl.SSLCertVerificationError as err:
        raise ConfigError(f"the IMAP server's certificate at {where} is not trusted "
                          f"({err.verify_message or err.reason})",
                          field="bounces.imap.ca_file",
                          fix="check bounces.imap.host; for a server with an in-house "
                              "certificate set bounces.imap.ca_file to its CA (PEM)") from err
    except ssl.SSLError as err:
        raise ConfigError(f"TLS with the IMAP server at {where} failed ({err.reason or err})",
                          field="bounces.imap.security", fix=fix_security) from err
    except socket.gaierror as err:
        raise ConfigError(f"the IMAP server's name {imap.host!r} cannot be resolved "
                          f"({err.strerror})", field="bounces.imap.host",
                          fix="check bounces.imap.host") from err
    except ConnectionRefusedError as err:
        raise MailboxError(f"the IMAP server at {where} refused the connection",
                           field="bounces.imap",
                           fix="check that it runs and listens there (bounces.imap.host, "
                               "port); the next fetch tries again") from err
    except TimeoutError as err:
        raise MailboxError(f"the IMAP server at {where} did not answer within "
                           f"{imap.timeout:g} s", field="bounces.imap",
                           fix="check bounces.imap.host and port (a TLS port such as 993 "
                               "needs security: ssl), or raise bounces.imap.timeout; the "
                               "next fetch tries again") from err
    except imaplib.IMAP4.abort as err:
        raise MailboxError(f"the IMAP server at {where} closed the connection "
                           f"({server_words(str(err))})", field="bounces.imap",
                           fix="check that host and port are the IMAP server's; "
                               + fix_security) from err
    except imaplib.IMAP4.error as err:
        raise ConfigError(f"the server at {where} does not talk IMAP as expected "
                          f"({server_words(str(err))})", field="bounces.imap",
                          fix="check bounces.imap.host and port; " + fix_security) from err
    except OSError as err:
        raise MailboxError(f"cannot reach the IMAP server at {where} "
                           f"({err.strerror or type(err).__name__})", field="bounces.imap",
                           fix="check the network, bounces.imap.host and port") from err
