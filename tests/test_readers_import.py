"""`newsletter subscribers import`: our columns, the common exports' (Mailchimp, Substack,
Buttondown, Ghost), encodings, delimiters, duplicates, bad rows, not-a-file; all through the
real CLI, and nothing imported on any mistake."""

from __future__ import annotations

import codecs
import os
from pathlib import Path

import pytest

from newsletter.errors import ConfigError
from newsletter.readers.csvfile import read_bytes
from newsletter.settings import load_settings
from tests.conftest import ISSUE_DATE, Project
from tests.readers_project import LIST, ledger

# Real header sets (see the report): a Mailchimp audience export, its unsubscribed and
# cleaned exports, Substack's email_list, Buttondown's and Ghost's member exports.
MAILCHIMP = (
    '"Email Address","First Name","Last Name",Address,"Phone Number",MEMBER_RATING,'
    "OPTIN_TIME,OPTIN_IP,CONFIRM_TIME,CONFIRM_IP,LATITUDE,LONGITUDE,GMTOFF,DSTOFF,TIMEZONE,"
    "CC,REGION,LAST_CHANGED,LEID,EUID,NOTES,TAGS\r\n"
    'mia@example.net,Mia,Wong,,,4,"2024-01-05 10:00:00",,"2024-01-05 10:02:11",1.2.3.4,'
    ',,,,Asia/Tokyo,JP,,"2024-01-05 10:02:11",123,abc,,"""City"",""VIP"""\r\n'
    'ola@example.net,Ola,,,,2,"2024-02-01 08:00:00",,,,,,,,,,,,124,abd,,\r\n')
MAILCHIMP_UNSUBSCRIBED = (
    '"Email Address","First Name","Last Name",MEMBER_RATING,OPTIN_TIME,UNSUB_TIME,'
    "UNSUB_CAMPAIGN_TITLE,UNSUB_CAMPAIGN_ID,UNSUB_REASON,UNSUB_REASON_OTHER,LEID,EUID,TAGS\r\n"
    'left@example.net,Left,Early,1,"2023-01-01 00:00:00","2024-03-01 09:00:00",March,'
    "c1,NORMAL,,1,a,\r\n")
MAILCHIMP_CLEANED = (
    '"Email Address","First Name",MEMBER_RATING,CLEAN_TIME,CLEAN_CAMPAIGN_TITLE,'
    "CLEAN_CAMPAIGN_ID,LEID,EUID\r\n"
    'bounced@example.net,Bo,1,"2024-04-01 00:00:00",April,c2,2,b\r\n')
SUBSTACK = ("email,active_subscription,expiry,plan,email_disabled,created_at,first_payment_at\n"
            "sam@example.net,false,,other,false,2025-01-01T00:00:00.000Z,\n"
            "quiet@example.net,false,,other,true,2025-02-01T00:00:00.000Z,\n")
BUTTONDOWN = ("email,creation_date,notes,metadata,tags,secondary_id,referrer_url,"
              "subscriber_type\n"
              'bea@example.net,2024-05-01,,"{}","culture",7,,regular\n'
              "new@example.net,2024-06-01,,{},,8,,unactivated\n"
              "gone@example.net,2024-01-01,,{},,9,,unsubscribed\n")
GHOST = ("id,email,name,note,subscribed_to_emails,complimentary_plan,stripe_customer_id,"
         "created_at,deleted_at,labels,tiers\n"
         '6501,gil@example.net,Gil Scott,"an early, kind reader",true,false,,'
         '2024-01-15T10:00:00.000Z,,"city, Friends",\n'
         "6502,hush@example.net,Hush,,false,false,,2024-02-10T08:00:00.000Z,,,\n")


def db_path(project: Project) -> Path:
    return project.root / load_settings(project.settings).ledger


def imported(project: Project, name: str, data: bytes | str, *extra: str):  # type: ignore[no-untyped-def]
    path = project.root / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return project.run("subscribers", "import", name, "--list", LIST, *extra)


def rows(project: Project) -> dict[str, tuple[str, str | None, tuple[str, ...] | None]]:
    if not db_path(project).exists():
        return {}
    with_ledger = ledger(project)
    try:
        return {r.email: (r.state, r.name, r.topics) for r in with_ledger.reader_rows(LIST)}
    finally:
        with_ledger.close()


def suppressed(project: Project) -> dict[str, str]:
    if not db_path(project).exists():
        return {}
    with_ledger = ledger(project)
    try:
        return {s.email: s.evidence.get("detail", "") for s in with_ledger.suppressions(LIST)}
    finally:
        with_ledger.close()


def test_a_mailchimp_export_says_which_columns_it_used_and_imports_pending(
        proj: Project) -> None:
    result = imported(proj, "members.csv", MAILCHIMP)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Email Address → email" in out and "First Name → first name" in out
    assert "TAGS → tags" in out and "TIMEZONE → timezone" in out
    assert "columns ignored: Address, Phone Number, MEMBER_RATING" in out
    assert "vip (1)" in out  # a tag that is no section: reported, not a topic
    assert "2 readers added" in out and "get no issue until they confirm" in out
    assert rows(proj) == {"mia@example.net": ("pending", "Mia Wong", ("city",)),
                          "ola@example.net": ("pending", "Ola", ())}
    # Pending: the next issue does not reach them.
    sent = proj.run("send", "--date", ISSUE_DATE)
    assert sent.returncode == 0, sent.stderr
    mail = {p.stem for p in proj.outbox.rglob("*.eml")}
    assert mail == {"ada@example.com", "linus@example.com"}


def test_confirmed_imports_are_mailed_with_their_time_zone(proj: Project) -> None:
    result = imported(proj, "members.csv", MAILCHIMP, "--status", "confirmed")
    assert result.returncode == 0, result.stderr
    with_ledger = ledger(proj)
    row = with_ledger.reader_row(LIST, "mia@example.net")
    with_ledger.close()
    assert row is not None and row.state == "confirmed" and row.timezone == "Asia/Tokyo"
    assert row.consent["via"] == "import" and row.consent["joined_before"].startswith("2024")
    jobs = proj.run("schedule", "--list-jobs")
    assert "Asia/Tokyo" in jobs.stdout  # the imported reader's zone gets its run
    proj.run("send", "--date", ISSUE_DATE)
    assert "mia@example.net" in {p.stem for p in proj.outbox.rglob("*.eml")}


@pytest.mark.parametrize(("name", "data", "who", "why"), [
    ("unsubscribed.csv", MAILCHIMP_UNSUBSCRIBED, "left@example.net", "unsubscribed on 2024"),
    ("cleaned.csv", MAILCHIMP_CLEANED, "bounced@example.net", "cleaned on 2024"),
    ("substack.csv", SUBSTACK, "quiet@example.net", "email_disabled true"),
    ("buttondown.csv", BUTTONDOWN, "gone@example.net", "status unsubscribed"),
    ("ghost.csv", GHOST, "hush@example.net", "subscribed false"),
])
def test_who_left_in_the_old_tool_is_suppressed_never_a_reader(
        proj: Project, name: str, data: str, who: str, why: str) -> None:
    result = imported(proj, name, data, "--status", "confirmed")
    assert result.returncode == 0, result.stderr
    assert who not in rows(proj)
    gone = suppressed(proj)
    assert who in gone and why in gone[who]
    assert "who left in the old tool suppressed" in result.stdout
    proj.run("send", "--date", ISSUE_DATE)
    assert who not in {p.stem for p in proj.outbox.rglob("*.eml")}


def test_each_export_maps_its_own_columns(proj: Project) -> None:
    assert imported(proj, "substack.csv", SUBSTACK).returncode == 0
    assert imported(proj, "buttondown.csv", BUTTONDOWN, "--status", "confirmed").returncode == 0
    ghost = imported(proj, "ghost.csv", GHOST, "--status", "confirmed")
    assert "labels → tags" in ghost.stdout and "subscribed_to_emails → subscribed" in ghost.stdout
    assert "note" in ghost.stdout.split("columns ignored:")[1]  # a private note stays behind
    found = rows(proj)
    assert found["sam@example.net"] == ("pending", None, ())
    assert found["bea@example.net"] == ("confirmed", None, ("culture",))
    assert found["new@example.net"][0] == "pending"  # unactivated: never more than that
    assert found["gil@example.net"] == ("confirmed", "Gil Scott", ("city",))


def test_utf8_with_a_bom_and_utf16_are_read(proj: Project) -> None:
    text = "email,name\r\nzoe@example.net,Zoë Ångström\r\n"
    assert imported(proj, "bom.csv", codecs.BOM_UTF8 + text.encode()).returncode == 0
    text16 = "email;name\r\nyu@example.net,Yū\r\n".replace(",", ";")
    assert imported(proj, "u16.csv", text16.encode("utf-16")).returncode == 0
    found = rows(proj)
    assert found["zoe@example.net"][1] == "Zoë Ångström"
    assert found["yu@example.net"][1] == "Yū"


def test_a_latin1_file_is_one_error_and_nothing_is_imported(proj: Project) -> None:
    result = imported(proj, "latin1.csv", "email,name\nann@example.net,Ann\n"
                      "zoe@example.net,Zoë\n".encode("latin-1"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith("error: latin1.csv:3: is not UTF-8: byte 49 (0xeb), on line 3")
    assert "re-save it as UTF-8" in lines[0]
    assert rows(proj) == {}


def test_duplicate_rows_warn_and_the_first_wins(proj: Project) -> None:
    result = imported(proj, "dups.csv", "email,name\nkim@example.net,First Kim\n"
                      "KIM@example.net,Second Kim\n")
    assert result.returncode == 0
    assert "dups.csv:3: duplicate address KIM@example.net (ignored; the row on line 2 wins)" \
        in result.stderr
    assert rows(proj)["kim@example.net"][1] == "First Kim"


def test_one_bad_row_imports_nothing_and_every_bad_line_is_named(proj: Project) -> None:
    csv_text = ("email,name,topics,timezone,status\n"
                "good@example.net,Good,city,Europe/Paris,\n"
                "not-an-address,Bad,,,\n"
                "t@example.net,Topic,sport,,\n"
                "z@example.net,Zone,,Mars/Olympus,\n"
                "s@example.net,Status,,,maybe\n"
                ",,,,\n"
                ",Nobody,,,\n")
    result = imported(proj, "bad.csv", csv_text)
    assert result.returncode == 2
    errors = result.stderr.strip().splitlines()
    assert [e.split(":")[2] for e in errors] == ["3", "4", "5", "6", "8"]
    assert "bad.csv:4: topics: unknown topic 'sport'" in result.stderr
    assert "bad.csv:6: status: unknown status 'maybe'" in result.stderr
    assert "bad.csv:8: email: missing address" in result.stderr
    assert rows(proj) == {}


def test_a_name_with_a_line_break_is_refused(proj: Project) -> None:
    result = imported(proj, "nl.csv", 'email,name\nx@example.net,"Evil\r\nBcc: y@z"\n')
    assert result.returncode == 2 and "control character" in result.stderr
    assert rows(proj) == {}


@pytest.mark.parametrize("delimiter", [";", "\t"])
def test_semicolons_and_tabs_are_delimiters_too(proj: Project, delimiter: str) -> None:
    text = f"email{delimiter}name{delimiter}topics\nemi@example.net{delimiter}Emi, the reader" \
           f"{delimiter}city,culture\n"
    assert imported(proj, "semi.csv", text).returncode == 0
    assert rows(proj)["emi@example.net"] == ("pending", "Emi, the reader", ("city", "culture"))


def test_addresses_in_the_file_or_the_database_are_left_alone(proj: Project) -> None:
    first = imported(proj, "a.csv", "email,name\nada@example.com,Someone Else\n"
                     "new@example.net,New\n")
    assert "1 already in config/subscribers.yaml" in first.stdout
    assert "ada@example.com" not in rows(proj)
    second = imported(proj, "b.csv", "email,name\nnew@example.net,Renamed\n", "--status",
                      "confirmed")
    assert "1 already in the database (left as they are)" in second.stdout
    assert rows(proj)["new@example.net"] == ("pending", "New", ())


def test_a_forgotten_address_is_not_imported_again(proj: Project) -> None:
    imported(proj, "a.csv", "email\nfor@example.net\n")
    assert proj.run("subscribers", "forget", "for@example.net", "--yes").returncode == 0
    again = imported(proj, "b.csv", "email,status\nfor@example.net,\nx@example.net,cleaned\n")
    assert "1 asked to be forgotten (left out)" in again.stdout
    assert "for@example.net" not in rows(proj)


@pytest.mark.parametrize("target", ["folder", "fifo", "/dev/zero", "missing.csv"])
def test_what_is_no_regular_file_is_one_error(proj: Project, target: str) -> None:
    if target == "folder":
        (proj.root / "folder").mkdir()
    elif target == "fifo":
        os.mkfifo(proj.root / "fifo")
    result = proj.run("subscribers", "import", target, "--list", LIST)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: {target}: ")


def test_a_file_over_the_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    path.write_bytes(b"email\n" + b"a@example.net\n" * 10)
    with pytest.raises(ConfigError, match="more than the 100 allowed"):
        read_bytes(path, limit=100)
    assert read_bytes(path, limit=1000).startswith(b"email")


def test_an_unknown_list_or_no_address_column_is_one_error(proj: Project) -> None:
    (proj.root / "x.csv").write_text("email\na@example.net\n")
    unknown = proj.run("subscribers", "import", "x.csv", "--list", "nope")
    assert unknown.returncode == 2 and "unknown list 'nope'" in unknown.stderr
    no_email = imported(proj, "y.csv", "name,city\nAnn,Paris\n")
    assert no_email.returncode == 2 and "no column of addresses" in no_email.stderr
    broken = imported(proj, "z.csv", 'email,name\na@example.net,"unterminated\n')
    assert broken.returncode == 2 and "z.csv:2:" in broken.stderr
