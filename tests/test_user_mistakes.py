"""Every user mistake: the real CLI exits non-zero with one clear line per problem, names the
file and line (or the setting), prints no traceback, and sends or writes nothing."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from tests.conftest import ISSUE_DATE, Project
from tests.smtp_server import free_port


@dataclass
class Mistake:
    setup: Callable[[Project], None]
    args: tuple[str, ...]
    expect: list[str]  # fragments of stderr, in order of appearance
    env: dict[str, str] = field(default_factory=dict)
    code: int = 2


def replace(relative: str, old: str, new: str) -> Callable[[Project], None]:
    def edit(project: Project) -> None:
        path = project.root / relative
        text = path.read_text(encoding="utf-8")
        assert old in text, f"{old!r} not in {relative}"
        path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return edit


def write(relative: str, text: str | bytes) -> Callable[[Project], None]:
    def put(project: Project) -> None:
        path = project.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
    return put


def nothing(project: Project) -> None:
    pass


SEND = ("send", "--date", ISSUE_DATE)
SETTINGS = "config/newsletter.yaml"
SUBSCRIBERS = "config/subscribers.yaml"

MISTAKES = {
    "settings: malformed YAML": Mistake(
        replace(SETTINGS, "  title: The Test Brief\n", "  title: The Test Brief\n    x: y\n"),
        SEND, ["config/newsletter.yaml:3: invalid YAML"]),
    "settings: unknown key (a typo)": Mistake(
        replace(SETTINGS, "  port: 2525", "  prot: 2525"),
        SEND, ["config/newsletter.yaml:17: smtp.prot: unknown setting",
               "allowed keys here: host, port"]),
    "settings: unknown backend": Mistake(
        replace(SETTINGS, "backend: file", "backend: pigeon"),
        SEND, ["config/newsletter.yaml:13: delivery.backend: Input should be 'file', 'smtp' "
               "or 'console'"]),
    "settings: bad port": Mistake(
        replace(SETTINGS, "port: 2525", "port: 99999"),
        SEND, ["config/newsletter.yaml:17: smtp.port: Input should be less than or equal to "
               "65535"]),
    "environment: bad port": Mistake(
        nothing, SEND, ["NEWSLETTER_SMTP__PORT (environment): Input should be a valid integer"],
        env={"NEWSLETTER_SMTP__PORT": "abc"}),
    "settings: bad timezone": Mistake(
        replace(SETTINGS, "Europe/London", "Europe/Londn"),
        SEND, ["config/newsletter.yaml:22: schedule.timezone: unknown time zone"]),
    "settings: bad time": Mistake(
        replace(SETTINGS, '"07:00"', '"25:61"'),
        SEND, ['config/newsletter.yaml:21: schedule.time: must be a 24-hour time "HH:MM"']),
    "settings: bad sender": Mistake(
        replace(SETTINGS, '"The Test Brief <brief@example.com>"', "brief at example"),
        SEND, ["config/newsletter.yaml:3: newsletter.sender: not a valid sender"]),
    "settings: password in the file": Mistake(
        replace(SETTINGS, "  timeout: 5\n", "  timeout: 5\n  password: hunter2\n"),
        SEND, ["config/newsletter.yaml:20: smtp.password: secrets don't belong in the settings "
               "file — remove it and set NEWSLETTER_SMTP__PASSWORD"]),
    "settings: file missing": Mistake(
        nothing, ("--config", "nowhere.yaml", *SEND), ["nowhere.yaml: settings file not found"]),
    "subscribers: malformed YAML": Mistake(
        replace(SUBSCRIBERS, "name: Ada Lovelace", 'name: "Ada Lovelace'),
        SEND, ["config/subscribers.yaml:", "invalid YAML"]),
    "subscribers: several problems at once": Mistake(
        write(SUBSCRIBERS, "lists:\n  brief:\n    subscribers:\n      - ada@@example.com\n"
                           "      - email: bob@example.com\n        status: paused\n"
                           "      - email: cy@example.com\n        nmae: Cy\n"),
        SEND, ["config/subscribers.yaml:4: invalid address 'ada@@example.com'",
               "config/subscribers.yaml:5: unknown status 'paused'",
               "config/subscribers.yaml:7: unknown key 'nmae'"]),
    "subscribers: file is a folder": Mistake(
        nothing, SEND, ["config: subscriber file is a folder, not a file"],
        env={"NEWSLETTER_SUBSCRIBERS": "config"}),
    "subscribers: file missing": Mistake(
        nothing, ("subscribers", "check"), ["nope.yaml: subscriber file not found"],
        env={"NEWSLETTER_SUBSCRIBERS": "nope.yaml"}),
    "unknown list": Mistake(
        nothing, (*SEND, "--list", "evening"),
        ["--list: unknown list 'evening' — lists in this file: morning-brief"]),
    "unknown backend option": Mistake(
        nothing, (*SEND, "--backend", "fax"),
        ["--backend: unknown delivery backend 'fax' — use one of: file, smtp, console"]),
    "bad --date": Mistake(nothing, ("send", "--date", "2026-13-01"),
                          ["Invalid value for '--date': '2026-13-01'"]),
    "invalid --to": Mistake(nothing, (*SEND, "--to", "editor-at-example"),
                            ["--to: invalid address 'editor-at-example'"]),
    "templates: folder missing": Mistake(
        lambda p: shutil.rmtree(p.templates), SEND,
        ["templates: template folder not found (setting 'templates')"]),
    "templates: digest.txt missing": Mistake(
        lambda p: (p.templates / "digest.txt").unlink(), SEND,
        ["templates: template 'digest.txt' not found in this folder"]),
    "templates: syntax error": Mistake(
        replace("templates/digest.html", "<body>", "<body>\n{% if %}"), SEND,
        ["templates/digest.html:15: template syntax error"]),
    "templates: undefined variable": Mistake(
        replace("templates/digest.txt", "{{ issue.date_label }}", "{{ issue.weather }}"), SEND,
        ["templates/digest.txt:2: template error:", "weather"]),
    "articles: none at all": Mistake(
        lambda p: [a.unlink() for a in p.articles.iterdir()], SEND,
        ["articles.paths: there are no articles"]),
    "articles: folder missing": Mistake(
        lambda p: shutil.rmtree(p.articles), SEND,
        ["articles: articles.paths: article folder not found"]),
    "articles: all stale, and quiet days are errors": Mistake(
        nothing, ("send", "--date", "2026-12-30"),
        ["no articles for 2026-12-30: the newest (2026-11-24) is older than max_age_days (2)"],
        env={"NEWSLETTER_ARTICLES__QUIET_DAY": "error"}),
    "articles: bad date in front matter": Mistake(
        replace("articles/2026-11-23-museum.md", "published: 2026-11-23T09:00:00+00:00",
                "published: last Tuesday"), SEND,
        ["articles/2026-11-23-museum.md:5: published: not a date"]),
    "articles: impossible date in front matter": Mistake(
        replace("articles/2026-11-23-museum.md", "published: 2026-11-23T09:00:00+00:00",
                "published: 2026-02-30"), SEND,
        ["articles/2026-11-23-museum.md:5: published: not a date"]),
    "articles: placeholder year in front matter": Mistake(
        replace("articles/2026-11-23-museum.md", "published: 2026-11-23T09:00:00+00:00",
                "published: 0001-01-01T00:00:00Z"), SEND,
        ["articles/2026-11-23-museum.md:5: published: year 1 is not a publication date"]),
    "articles: unknown front matter key": Mistake(
        replace("articles/2026-11-23-museum.md", "section: culture", "sektion: culture"), SEND,
        ["articles/2026-11-23-museum.md:6: sektion: unknown front matter key"]),
    "articles: not UTF-8": Mistake(
        write("articles/latin1.md", "---\ntitle: Café\n---\n".encode("latin-1")), SEND,
        ["articles/latin1.md: article is not UTF-8 text"]),
    "smtp: nothing listening": Mistake(
        nothing, SEND, ["cannot connect to the SMTP server at 127.0.0.1:"],
        env={"NEWSLETTER_DELIVERY__BACKEND": "smtp", "NEWSLETTER_SMTP__SECURITY": "none"}),
    "smtp: username without password": Mistake(
        nothing, SEND, ["smtp.password: smtp.username is set but there is no password"],
        env={"NEWSLETTER_DELIVERY__BACKEND": "smtp", "NEWSLETTER_SMTP__USERNAME": "me"}),
}


@pytest.mark.parametrize("name", MISTAKES)
def test_a_mistake_gets_one_clear_line_and_nothing_is_sent(project: Project, name: str) -> None:
    mistake = MISTAKES[name]
    mistake.setup(project)
    env = dict(mistake.env)
    if "smtp" in name:
        env["NEWSLETTER_SMTP__PORT"] = str(free_port())
    result = project.run(*mistake.args, env=env)
    assert result.returncode == mistake.code, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    stderr = result.stderr
    position = 0
    for fragment in mistake.expect:
        found = stderr.find(fragment, position)
        assert found >= 0, f"{fragment!r} not in stderr:\n{stderr}"
        position = found
    # ours start "error: "; click's usage errors "Error: "
    errors = [line for line in stderr.splitlines() if line.lower().startswith("error: ")]
    assert errors, stderr
    assert not list(project.root.rglob("*.eml")), "a failed run wrote messages"
    assert not list(project.root.rglob("*.part")), "a failed run left half-written files"


def test_a_duplicate_address_is_only_a_warning(project: Project) -> None:
    replace(SUBSCRIBERS, "      - linus@example.com\n",
            "      - linus@example.com\n      - LINUS@example.com\n")(project)
    result = project.run(*SEND)
    assert result.returncode == 0, result.stderr
    assert ("warning: config/subscribers.yaml:11: duplicate address LINUS@example.com in list "
            "'morning-brief' (ignored; the entry on line 10 wins)") in result.stderr
    assert len(list(project.outbox.rglob("linus@example.com.eml"))) == 1
    assert len(list(project.outbox.rglob("*.eml"))) == 3


def test_an_unreadable_subscriber_file(project: Project) -> None:
    import shutil
    import subprocess
    import sys

    from tests.conftest import clean_env

    project.subscribers.chmod(0)
    # Root reads any file through CAP_DAC_OVERRIDE (CI runs as root): without it, and
    # without CAP_DAC_READ_SEARCH, the permission bits hold for root too.
    drop = "-dac_override,-dac_read_search"
    prefix = [] if os.geteuid() else [
        shutil.which("setpriv") or "setpriv", f"--bounding-set={drop}", f"--inh-caps={drop}"]
    result = subprocess.run([*prefix, sys.executable, "-m", "newsletter", "subscribers",
                             "check"], cwd=project.root, env=clean_env(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert ("error: config/subscribers.yaml: cannot read subscriber file (permission denied)"
            in result.stderr)


def test_an_impossible_date_elsewhere_is_just_text(project: Project) -> None:
    replace(SUBSCRIBERS, "name: Ada Lovelace", "name: 2026-02-30")(project)
    result = project.run("subscribers", "check")
    assert result.returncode == 0 and "Traceback" not in result.stderr


def test_secrets_never_reach_the_output(project: Project) -> None:
    result = project.run("config", "show", env={"NEWSLETTER_SMTP__PASSWORD": "pa55-w0rd",
                                                "NEWSLETTER_SMTP__PORT": "nope"})
    assert result.returncode == 2
    assert "pa55-w0rd" not in result.stdout + result.stderr
    assert os.environ.get("NEWSLETTER_SMTP__PASSWORD") is None
