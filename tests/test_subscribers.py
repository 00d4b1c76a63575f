"""Subscriber lists: validation with line numbers, de-duplication, statuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from newsletter.errors import ConfigError
from newsletter.subscribers import load_roster


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "subscribers.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_lists_entries_and_statuses(tmp_path: Path) -> None:
    roster = load_roster(write(tmp_path, """\
lists:
  morning-brief:
    title: The Morning Brief
    subscribers:
      - email: ada@example.com
        name: "  Ada   Lovelace "
      - email: grace@EXAMPLE.com
        status: unsubscribed
      - linus@example.com
  weekly:
    subscribers:
      - ada@example.com
"""))
    brief, weekly = roster.lists["morning-brief"], roster.lists["weekly"]
    assert [(s.email, s.name, s.status) for s in brief.subscribers] == [
        ("ada@example.com", "Ada Lovelace", "active"),
        ("grace@example.com", None, "unsubscribed"),
        ("linus@example.com", None, "active"),
    ]
    assert [s.email for s in brief.active] == ["ada@example.com", "linus@example.com"]
    assert weekly.title == "weekly" and len(weekly.active) == 1
    assert roster.warnings == []


def test_duplicates_are_case_insensitive_warnings_and_first_wins(tmp_path: Path) -> None:
    path = write(tmp_path, """\
lists:
  brief:
    subscribers:
      - email: Ada@Example.com
        name: Ada
      - ada@example.COM
      - email: ADA@example.com
        status: unsubscribed
""")
    roster = load_roster(path)
    [ada] = roster.lists["brief"].subscribers
    assert (ada.email, ada.name, ada.status) == ("Ada@example.com", "Ada", "active")
    assert [str(w) for w in roster.warnings] == [
        f"{path}:6: duplicate address ada@example.com in list 'brief' (ignored; the entry "
        "on line 4 wins)",
        f"{path}:7: duplicate address ADA@example.com in list 'brief' (ignored; the entry "
        "on line 4 wins)",
    ]


def test_all_problems_reported_at_once_with_lines(tmp_path: Path) -> None:
    path = write(tmp_path, """\
lists:
  brief:
    subscribers:
      - not-an-address
      - email: ok@example.com
      - email: a@b@example.com
        name: Bad
      - email: c@example.com
        status: paused
      - email: d@example.com
        nmae: D
      - 42
      - name: No Email
  Bad_Name:
    subscribers: []
""")
    with pytest.raises(ConfigError) as caught:
        load_roster(path)
    lines = str(caught.value).splitlines()
    assert [line.split(": ", 1)[0] for line in lines] == [
        f"{path}:{n}" for n in (4, 6, 8, 10, 12, 13, 14)]
    assert "invalid address 'not-an-address'" in lines[0]
    assert "unknown status 'paused' — use one of: active, unsubscribed" in lines[2]
    assert "unknown key 'nmae'" in lines[3]
    assert "missing 'email'" in lines[5]
    assert "list name 'Bad_Name' is not allowed" in lines[6]


def test_structure_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected a 'lists:' mapping"):
        load_roster(write(tmp_path, "- a@example.com\n"))
    with pytest.raises(ConfigError, match=r"subscribers.yaml:4: invalid YAML: .* parsing a "
                       r"flow sequence that starts on line 3"):
        load_roster(write(tmp_path, "lists:\n  brief:\n    subscribers: [a@example.com\n"))


@pytest.mark.parametrize("address", [
    "ada@example.com", "Ada.Lovelace+news@Example.COM", "a_b-c@sub.example-domain.org",
    "x@a.b", "x@localhost.test", "x@sub.localhost", "x@example.local", "x@-bad.com",
    "x@bad-.com", "x@example.c0m", "x@example.123", "x@xn--mnchen-3ya.de", "x@xn--zz.de",
    "a..b@example.com", ".a@example.com", "a.@example.com", "a" * 64 + "@example.com",
    "a" * 65 + "@example.com", "a@" + "b" * 63 + ".com", "a@" + "b" * 64 + ".com",
    "a@" + ("b" * 60 + ".") * 4 + "com", "x@example", "x@@example.com", "Zoë@example.com",
])
def test_the_fast_path_agrees_with_email_validator(address: str) -> None:
    from email_validator import EmailNotValidError, validate_email

    from newsletter.addresses import InvalidAddress, normalize_address

    try:
        checked = validate_email(address, check_deliverability=False, allow_smtputf8=False)
        expected = checked.ascii_email or checked.normalized
    except EmailNotValidError:
        expected = None
    try:
        actual = normalize_address(address)
    except InvalidAddress:
        actual = None
    assert actual == expected


@pytest.mark.parametrize("title", [r"The Brief\r\nBcc: eve@example.net", r"The Brief\n",
                                   r"The \e[31mBrief", r"The Brief\x00", r"The Brief\u0085"])
def test_a_list_title_with_control_characters_is_an_error_with_its_line(
        tmp_path: Path, title: str) -> None:
    path = write(tmp_path, f"""\
lists:
  brief:
    subscribers: [ada@example.com]
    title: "{title}"
""")
    with pytest.raises(ConfigError) as caught:
        load_roster(path)
    [problem] = caught.value.problems
    assert (problem.file, problem.line, problem.field) == (path, 4, "title")
    assert str(problem).startswith(f"{path}:4: title: the title of list 'brief' holds a "
                                   "control character (")


def test_a_reader_name_with_control_characters_is_an_error_with_its_line(
        tmp_path: Path) -> None:
    path = write(tmp_path, r"""lists:
  brief:
    subscribers:
      - email: ada@example.com
        name: "Ada\r\nBcc: eve@example.net"
      - email: bob@example.com
        name: "Bob \e[2J"
      - email: cy@example.com
        name: "Cy\tTab"
""")
    with pytest.raises(ConfigError) as caught:
        load_roster(path)
    assert [(p.line, p.field, p.what) for p in caught.value.problems] == [
        (4, "name", "name holds a control character (CR)"),
        (6, "name", "name holds a control character (U+001B)"),
    ]  # a tab is white space: "Cy Tab"


def test_a_title_with_a_line_break_stops_send_before_any_message(project) -> None:
    project.write("config/subscribers.yaml", """\
        lists:
          morning-brief:
            title: "The Morning Brief\\r\\nBcc: eve@example.net"
            subscribers: [ada@example.com]
        """)
    result = project.run("send", "--date", "2026-11-24")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: config/subscribers.yaml:3: title: the title of "
                                    "list 'morning-brief' holds a control character (CR)")
    assert not list(project.outbox.rglob("*.eml"))
