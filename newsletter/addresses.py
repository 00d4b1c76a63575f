"""Email address syntax checks shared by settings and subscriber lists."""

from __future__ import annotations

from email.utils import parseaddr

from email_validator import EmailNotValidError, validate_email


class InvalidAddress(ValueError):
    """An address that fails the syntax check; the message says why."""


def normalize_address(address: str) -> str:
    """Return the address in canonical form (domain lower-cased, IDNA), or raise `InvalidAddress`.

    Only the syntax is checked, never DNS: the tool must work offline.
    """
    try:
        checked = validate_email(address.strip(), check_deliverability=False,
                                 allow_smtputf8=False)
    except EmailNotValidError as err:
        raise InvalidAddress(str(err)) from err
    return checked.ascii_email or checked.normalized


def split_mailbox(mailbox: str) -> tuple[str, str]:
    """Split `Name <addr@host>` into (name, normalized address)."""
    name, address = parseaddr(mailbox)
    if not address:
        raise InvalidAddress("expected an address such as 'Name <news@example.com>'")
    return name, normalize_address(address)
