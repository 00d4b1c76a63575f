"""The mailbox edges on their own: IMAP folder names in modified UTF-7 and quoted, and the
Maildir move that never loses or overwrites a file."""

from __future__ import annotations

import mailbox
import os
from pathlib import Path

import pytest

from newsletter.errors import ConfigError
from newsletter.inbound.mailbox import MAX_BYTES, Unreadable
from newsletter.inbound.mailbox_imap import decode_folder, encode_folder, folder_argument
from newsletter.inbound.mailbox_maildir import MaildirMailbox


@pytest.mark.parametrize(("name", "wire"), [
    ("INBOX", "INBOX"),
    ("Processed", "Processed"),
    ("Entwürfe", "Entw&APw-rfe"),
    ("Tom & Jerry", "Tom &- Jerry"),
    ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),  # RFC 3501 5.1.3
    ("😀", "&2D3eAA-"),  # outside the BMP: a surrogate pair
])
def test_folder_names_in_modified_utf7(name: str, wire: str) -> None:
    assert encode_folder(name) == wire
    assert decode_folder(wire) == name


def test_folder_arguments_are_quoted() -> None:
    assert folder_argument('Old "bounces"') == '"Old \\"bounces\\""'
    assert folder_argument("a\\b c") == '"a\\\\b c"'
    assert folder_argument("line\r\nbreak") == '"line&AA0ACg-break"'  # never a raw CRLF


def _maildir(tmp_path: Path) -> tuple[Path, mailbox.Maildir]:
    root = tmp_path / "Maildir"
    return root, mailbox.Maildir(root, create=True)


def test_a_move_interrupted_after_the_link_is_finished_next_time(tmp_path: Path) -> None:
    root, box = _maildir(tmp_path)
    key = box.add(b"Subject: x\r\n\r\nbody\r\n")
    opened = MaildirMailbox.open(root)
    [mail] = opened.messages()
    # A crash between the two steps: the file is in both folders.
    processed = root / ".Processed" / "cur"
    box.add_folder("Processed")
    os.link(root / "new" / key, processed / f"{key}:2,S")
    opened.mark_handled(mail)
    assert os.listdir(root / "new") == [] and os.listdir(processed) == [f"{key}:2,S"]
    assert (processed / f"{key}:2,S").read_bytes() == b"Subject: x\r\n\r\nbody\r\n"


def test_a_move_never_replaces_another_file(tmp_path: Path) -> None:
    root, box = _maildir(tmp_path)
    key = box.add(b"Subject: mine\r\n\r\n")
    box.add_folder("Processed")
    other = root / ".Processed" / "cur" / f"{key}:2,S"
    other.write_bytes(b"Subject: another mail of the same name\r\n\r\n")
    opened = MaildirMailbox.open(root)
    [mail] = opened.messages()
    opened.mark_handled(mail)
    kept = sorted((root / ".Processed" / "cur").iterdir())
    assert len(kept) == 2 and other.read_bytes().startswith(b"Subject: another")
    assert os.listdir(root / "new") == []


def test_flags_of_mail_already_seen_are_kept(tmp_path: Path) -> None:
    root, box = _maildir(tmp_path)
    key = box.add(b"Subject: x\r\n\r\n")
    os.rename(root / "new" / key, root / "cur" / f"{key}:2,F")
    opened = MaildirMailbox.open(root)
    [mail] = opened.messages()
    assert opened.label(mail) == f"cur/{key}:2,F"
    opened.mark_handled(mail)
    assert os.listdir(root / ".Processed" / "cur") == [f"{key}:2,FS"]


def test_what_is_not_mail_is_not_read(tmp_path: Path) -> None:
    root, _ = _maildir(tmp_path)
    (root / "new" / ".hidden").write_bytes(b"x")
    os.mkfifo(root / "new" / "1.fifo.host")
    os.symlink("/etc/passwd", root / "new" / "2.link.host")
    big = root / "new" / "3.big.host"
    with open(big, "wb") as f:
        f.truncate(MAX_BYTES + 1)
    opened = MaildirMailbox.open(root)
    [mail] = opened.messages()  # only the regular file
    with pytest.raises(Unreadable, match="too large"):
        opened.read(mail)


def test_a_maildir_is_never_created(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        MaildirMailbox.open(tmp_path / "nope")
    assert not (tmp_path / "nope").exists()
