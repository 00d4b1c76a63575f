"""Local-time delivery: each reader gets the day's issue at schedule.time in their own zone.

APScheduler's real triggers and job store run under a controllable clock; nothing sleeps.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import email.utils
import textwrap
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

import newsletter.scheduler as scheduler_module
from newsletter.ledger import SqliteLedger
from newsletter.scheduler import delivery_zones, due_date, job_id
from newsletter.settings import ScheduleSection, load_settings
from newsletter.subscribers import load_roster
from tests.conftest import Clock, ManualScheduler, Project, start_scheduler

UTC = dt.UTC
# Over the night of 31 October to 1 November 2026, Los Angeles leaves daylight saving
# time (UTC−7 → UTC−8); the other three zones keep their offsets.
READERS = {
    "pst@example.com": "America/Los_Angeles",   # UTC−8 (−7 on the first day)
    "gmt@example.com": "Europe/London",          # UTC+0, the schedule's own zone
    "ist@example.com": "Asia/Kolkata",           # UTC+5:30
    "nzdt@example.com": "Pacific/Auckland",      # UTC+13
}
SUBSCRIBERS = """\
lists:
  world:
    title: The World Brief
    subscribers:
      - email: pst@example.com
        timezone: America/Los_Angeles
      - gmt@example.com
      - email: ist@example.com
        timezone: Asia/Kolkata
      - email: nzdt@example.com
        timezone: Pacific/Auckland
"""


def _article(project: Project, slug: str, published: str, title: str) -> None:
    project.write(f"articles/{slug}.md", f"""\
        ---
        title: {title}
        url: https://news.example.com/{slug}
        summary: {title}, in brief.
        published: {published}
        section: city
        ---
        {title}. The whole story.
        """)


@pytest.fixture
def world(project: Project) -> Project:
    for path in project.articles.glob("*.md"):
        path.unlink()
    _article(project, "halloween", "2026-10-31T00:00:00+00:00", "Lanterns line the quay")
    _article(project, "all-saints", "2026-11-01T00:00:00+00:00", "Bells ring for All Saints")
    project.write("config/subscribers.yaml", SUBSCRIBERS)
    return project


def _sent(project: Project) -> dict[str, list[tuple[str, dt.datetime, str]]]:
    """For each reader: (issue date folder, Date header, subject) of every message."""
    out: dict[str, list[tuple[str, dt.datetime, str]]] = {}
    for path in sorted(project.outbox.glob("mail/world/*/*.eml")):
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        out.setdefault(path.stem, []).append(
            (path.parent.name, email.utils.parsedate_to_datetime(msg["Date"]),
             str(msg["Subject"])))
    return out


def _subjects(project: Project) -> dict[str, str]:
    """Each reader's subject, in a project that sent them one issue each."""
    return {reader: subject for reader, [(_, _, subject)] in _sent(project).items()}


def _run_clock(scheduler: ManualScheduler, clock: Clock, until: dt.datetime,
               step: dt.timedelta = dt.timedelta(minutes=15)) -> None:
    while clock.now < until:
        clock.now += step
        scheduler.tick()


def test_each_reader_gets_one_issue_at_their_local_seven_over_a_dst_change(
        world: Project, clock: Clock) -> None:
    clock.now = dt.datetime(2026, 10, 30, 12, 0, tzinfo=UTC)
    scheduler = start_scheduler(world)
    assert sorted(job.id for job in scheduler.get_jobs()) == sorted(
        job_id(zone) for zone in READERS.values())
    try:
        # The scheduler process restarts between time zones on the second day: after
        # Auckland's and Kolkata's runs, before London's and Los Angeles's.
        _run_clock(scheduler, clock, dt.datetime(2026, 11, 1, 3, 0, tzinfo=UTC))
    finally:
        scheduler.shutdown(wait=False)
    scheduler = start_scheduler(world)
    try:
        _run_clock(scheduler, clock, dt.datetime(2026, 11, 2, 0, 0, tzinfo=UTC))
    finally:
        scheduler.shutdown(wait=False)

    sent = _sent(world)
    assert sorted(sent) == sorted(address.partition("@")[0] + "@example.com"
                                  for address in READERS)
    for address, zone in READERS.items():
        messages = sent[address]
        assert [folder for folder, _, _ in messages] == ["2026-10-31", "2026-11-01"], address
        for folder, date_header, _ in messages:
            local = date_header.astimezone(ZoneInfo(zone))
            assert (local.date().isoformat(), local.hour, local.minute) == (folder, 7, 0), (
                address, date_header)
    # Los Angeles: 14:00 UTC on the first day (PDT), 15:00 UTC on the second (PST).
    assert [d.astimezone(UTC).hour for _, d, _ in sent["pst@example.com"]] == [14, 15]
    assert [d.astimezone(UTC) for _, d, _ in sent["nzdt@example.com"]] == [
        dt.datetime(2026, 10, 30, 18, 0, tzinfo=UTC), dt.datetime(2026, 10, 31, 18, 0, tzinfo=UTC)]
    # Everyone got the same issue for a date, chosen by the first zone to send it.
    for day, lead in (("2026-10-31", "Lanterns line the quay"),
                      ("2026-11-01", "Bells ring for All Saints")):
        subjects = {subject for messages in sent.values()
                    for folder, _, subject in messages if folder == day}
        assert subjects == {f"The World Brief: {lead}"}
    ledger = SqliteLedger(world.outbox / "newsletter.sqlite3")
    try:
        for day in ("2026-10-31", "2026-11-01"):
            rows = ledger.deliveries(f"world/{day}").values()
            assert sorted((r.status, r.attempts) for r in rows) == [("sent", 1)] * 4
            assert ledger.issue(f"world/{day}").state == "complete"
    finally:
        ledger.close()


def test_issue_is_incomplete_until_the_last_zone_has_had_it(world: Project, clock: Clock) -> None:
    clock.now = dt.datetime(2026, 10, 31, 0, 0, tzinfo=UTC)  # after Auckland's 07:00 (+13)
    scheduler = start_scheduler(world)
    try:
        _run_clock(scheduler, clock, dt.datetime(2026, 10, 31, 8, 0, tzinfo=UTC))
    finally:
        scheduler.shutdown(wait=False)
    ledger = SqliteLedger(world.outbox / "newsletter.sqlite3")
    try:
        statuses = ledger.statuses("world/2026-10-31")
        assert statuses == {"pst@example.com": "pending", "gmt@example.com": "sent",
                            "ist@example.com": "sent", "nzdt@example.com": "pending"}
        assert ledger.issue("world/2026-10-31").state == "sending"
    finally:
        ledger.close()
    status = world.run("status")
    assert "world/2026-10-31 [sending]: 2 sent, 2 pending" in status.stdout


def test_a_zone_missed_while_down_goes_out_once_within_grace_and_is_logged_when_stale(
        world: Project, clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    clock.now = dt.datetime(2026, 11, 1, 0, 0, tzinfo=UTC)
    start_scheduler(world).shutdown(wait=False)  # down over Kolkata's 01:30 UTC and London's
    clock.now = dt.datetime(2026, 11, 1, 7, 40, tzinfo=UTC)  # back 40 min after London's 07:00
    scheduler = start_scheduler(world)
    try:
        scheduler.tick()
        scheduler.tick()
    finally:
        scheduler.shutdown(wait=False)
    sent = _sent(world)
    assert [(folder, d) for folder, d, _ in sent["gmt@example.com"]] == [
        ("2026-11-01", dt.datetime(2026, 11, 1, 7, 40, tzinfo=UTC))]
    assert "ist@example.com" not in sent  # Kolkata's run was six hours late: stale
    assert ("skipped as stale" in caplog.text
            and "newsletter send --date 2026-11-01 --timezone Asia/Kolkata" in caplog.text)
    # The command from the log sends exactly those readers, and nobody twice.
    by_hand = world.run("send", "--date", "2026-11-01", "--timezone", "Asia/Kolkata")
    assert by_hand.returncode == 0, by_hand.stderr
    assert "1 sent, 1 sent earlier" in by_hand.stdout
    assert "2 waiting for their time zone's run" in by_hand.stdout
    assert sorted(_sent(world)) == ["gmt@example.com", "ist@example.com"]


def test_new_time_zones_are_picked_up_while_running(world: Project, clock: Clock) -> None:
    world.write("config/subscribers.yaml", "lists:\n  world:\n    subscribers: [gmt@example.com]\n")
    clock.now = dt.datetime(2026, 10, 31, 12, 0, tzinfo=UTC)
    scheduler = start_scheduler(world)
    try:
        assert [job.id for job in scheduler.get_jobs()] == [job_id("Europe/London")]
        world.write("config/subscribers.yaml", SUBSCRIBERS)
        scheduler_module.refresh_jobs(scheduler, world.settings)
        assert sorted(job.id for job in scheduler.get_jobs()) == sorted(
            job_id(zone) for zone in READERS.values())
        _run_clock(scheduler, clock, dt.datetime(2026, 11, 1, 16, 0, tzinfo=UTC))
        world.write("config/subscribers.yaml", "lists: [broken")
        scheduler_module.refresh_jobs(scheduler, world.settings)  # logged, jobs kept
        assert len(scheduler.get_jobs()) == 4
    finally:
        scheduler.shutdown(wait=False)
    # Added at noon on the 31st: the Los Angeles reader's 07:00 was still ahead (14:00 UTC).
    sent = _sent(world)
    assert [folder for folder, _, _ in sent["pst@example.com"]] == ["2026-10-31", "2026-11-01"]
    assert [folder for folder, _, _ in sent["nzdt@example.com"]] == ["2026-11-01"]


def test_the_job_of_older_versions_is_replaced_by_one_per_zone(world: Project,
                                                                clock: Clock) -> None:
    schedule = load_settings(world.settings).schedule
    old = ManualScheduler(timezone=schedule.tz,
                          jobstores={"default": scheduler_module.job_store(schedule)})
    old.start(paused=True)
    old.add_job(scheduler_module.scheduled_send, trigger=scheduler_module.daily_trigger(schedule),
                args=(str(world.settings.resolve()),), id=scheduler_module.LEGACY_JOB_ID)
    old.shutdown(wait=False)
    scheduler = start_scheduler(world)
    try:
        assert scheduler_module.LEGACY_JOB_ID not in {job.id for job in scheduler.get_jobs()}
        assert len(scheduler.get_jobs()) == 4
    finally:
        scheduler.shutdown(wait=False)


@pytest.mark.parametrize(("now", "zone", "expected"), [
    ("2026-11-01T06:59:00+00:00", "Europe/London", "2026-10-31"),
    ("2026-11-01T07:00:00+00:00", "Europe/London", "2026-11-01"),
    ("2026-10-31T18:00:00+00:00", "Pacific/Auckland", "2026-11-01"),
    ("2026-11-01T14:59:00+00:00", "America/Los_Angeles", "2026-10-31"),  # 06:59 PST
    ("2026-11-01T15:00:00+00:00", "America/Los_Angeles", "2026-11-01"),
])
def test_due_date_is_the_local_date_of_the_latest_morning(now: str, zone: str,
                                                          expected: str) -> None:
    schedule = ScheduleSection(time="07:00", timezone="Europe/London")
    assert due_date(schedule, zone, dt.datetime.fromisoformat(now)).isoformat() == expected


def test_zones_come_from_reader_then_list_then_schedule(project: Project) -> None:
    project.write("config/subscribers.yaml", """\
        lists:
          a:
            timezone: Asia/Tokyo
            subscribers:
              - x@example.com
              - email: y@example.com
                timezone: America/Chicago
              - email: gone@example.com
                timezone: Europe/Paris
                status: unsubscribed
          b:
            subscribers: [z@example.com, w@example.com]
        """)
    settings = load_settings(project.settings)
    zones = delivery_zones(load_roster(Path(settings.subscribers)), settings)
    assert zones == {"America/Chicago": 1, "Asia/Tokyo": 1, "Europe/London": 2}


def test_list_jobs_shows_every_zone(world: Project) -> None:
    result = world.run("schedule", "--list-jobs")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("daily digest at 07:00 local time in 4 time zones")
    assert len(lines) == 6
    zones = [line.split()[4] for line in lines[1:]]
    assert set(zones) <= set(READERS.values()) and len(set(zones)) == 4


def test_a_list_is_composed_at_its_own_readers_first_morning(world: Project,
                                                             clock: Clock) -> None:
    world.write("config/subscribers.yaml", SUBSCRIBERS + """\
  west:
    title: West Coast Brief
    timezone: America/Los_Angeles
    subscribers: [reader@example.com]
""")
    clock.now = dt.datetime(2026, 10, 30, 12, 0, tzinfo=UTC)
    scheduler = start_scheduler(world)
    try:
        _run_clock(scheduler, clock, dt.datetime(2026, 10, 31, 8, 0, tzinfo=UTC))
        ledger = SqliteLedger(world.outbox / "newsletter.sqlite3")
        try:
            assert ledger.issue("world/2026-10-31") is not None  # Auckland's run made it
            assert ledger.issue("west/2026-10-31") is None  # not before its readers' 07:00
            _run_clock(scheduler, clock, dt.datetime(2026, 10, 31, 15, 0, tzinfo=UTC))
            assert ledger.statuses("west/2026-10-31") == {"reader@example.com": "sent"}
        finally:
            ledger.close()
    finally:
        scheduler.shutdown(wait=False)


def test_send_with_an_unknown_time_zone_is_one_clear_error(world: Project) -> None:
    result = world.run("send", "--date", "2026-11-01", "--timezone", "Europe/Londn")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == ("error: --timezone: 'Europe/Londn': unknown time zone; use "
                                     "an IANA name such as Europe/London or America/New_York")
    assert not list(world.outbox.glob("mail/world/*/*.eml"))


def test_send_to_a_zone_no_reader_uses_says_so(world: Project) -> None:
    result = world.run("send", "--date", "2026-11-01", "--timezone", "US/Pacific")
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == (
        "nothing to send: no active reader's time zone is US/Pacific (in use: "
        "America/Los_Angeles, Asia/Kolkata, Europe/London, Pacific/Auckland)")
    assert not list(world.outbox.glob("mail/world/*/*.eml"))


def test_resend_to_one_zone_leaves_the_other_zones_alone(world: Project) -> None:
    for zone in ("Pacific/Auckland", "America/Los_Angeles"):
        assert world.run("send", "--date", "2026-11-01", "--timezone", zone).returncode == 0
    again = world.run("send", "--date", "2026-11-01", "--timezone", "Europe/London", "--resend")
    assert again.returncode == 0, again.stderr
    assert "1 sent, 2 sent earlier, 0 failed, 1 waiting" in again.stdout
    rest = world.run("send", "--date", "2026-11-01")
    assert rest.returncode == 0, rest.stderr
    assert "world/2026-11-01 [file]: 1 sent, 3 sent earlier, 0 failed" in rest.stdout  # Kolkata


def _only_feed(world: Project, items: str) -> Path:
    """Make `feed.xml`, holding `items`, the project's only source of articles."""
    for path in world.articles.glob("*.md"):
        path.unlink()
    feed = world.write("feed.xml", """\
        <?xml version="1.0"?>
        <rss version="2.0"><channel><title>Quay</title><link>https://news.example.com/</link>
        """ + textwrap.indent(textwrap.dedent(items), " " * 8) + """\
        </channel></rss>
        """)
    text = world.settings.read_text().replace("  paths: [articles]\n",
                                              "  paths: [articles]\n  feeds: [feed.xml]\n")
    world.settings.write_text(text)
    return feed


def test_later_zones_get_the_issue_even_when_a_feed_has_dropped_its_article(
        world: Project) -> None:
    feed = _only_feed(world, """\
        <item><title>Lanterns line the quay</title><link>https://news.example.com/lanterns</link>
        <description>Lanterns along the quay tonight.</description>
        <pubDate>Sun, 01 Nov 2026 00:00:00 +0000</pubDate><category>city</category></item>
        """)
    first = world.run("send", "--date", "2026-11-01", "--timezone", "Pacific/Auckland")
    assert first.returncode == 0, first.stderr
    # By London's morning the feed has moved on: the entry is gone, a new one is there.
    feed.write_text(feed.read_text().replace("Lanterns line the quay", "Bells ring out")
                    .replace("/lanterns", "/bells"))
    later = world.run("send", "--date", "2026-11-01", "--timezone", "Europe/London")
    assert later.returncode == 0, later.stderr
    subjects = _subjects(world)
    assert subjects == {"nzdt@example.com": "The World Brief: Lanterns line the quay",
                        "gmt@example.com": "The World Brief: Lanterns line the quay"}
    # By Los Angeles's morning the feed cannot be read at all: a warning, and the recorded
    # issue still goes out.
    feed.unlink()
    last = world.run("send", "--date", "2026-11-01", "--timezone", "America/Los_Angeles")
    assert last.returncode == 0, last.stderr
    assert "warning: feed.xml: articles.feeds: feed file not found" in last.stderr
    assert email.message_from_bytes(
        (world.outbox / "mail/world/2026-11-01/pst@example.com.eml").read_bytes())["Subject"] == \
        "The World Brief: Lanterns line the quay"
    # A new issue cannot be made from no feed at all: that is still an error.
    fresh = world.run("send", "--date", "2026-11-02", "--timezone", "Pacific/Auckland")
    assert fresh.returncode == 2 and "error: articles.feeds: the feed could not be read" in \
        fresh.stderr and "Traceback" not in fresh.stderr


@pytest.mark.parametrize("zone", ["US", "Europe", "localtime"])
def test_a_zone_folder_or_alias_is_an_error_with_its_line(project: Project, zone: str) -> None:
    project.write("config/subscribers.yaml", f"""\
        lists:
          a:
            subscribers:
              - email: x@example.com
                timezone: {zone}
        """)
    result = project.run("subscribers", "check")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"subscribers.yaml:4: timezone '{zone}': unknown time zone" in result.stderr


def test_a_later_zones_topic_variant_is_chosen_from_the_kept_copies_when_feeds_are_down(
        world: Project) -> None:
    feed = _only_feed(world, """\
        <item><title>Lanterns line the quay</title><link>https://news.example.com/lanterns</link>
        <pubDate>Sun, 01 Nov 2026 02:00:00 +0000</pubDate><category>city</category></item>
        <item><title>Choir sings at the lighthouse</title>
        <link>https://news.example.com/choir</link>
        <pubDate>Sun, 01 Nov 2026 00:00:00 +0000</pubDate><category>culture</category></item>
        """)
    world.write("config/subscribers.yaml", """\
        lists:
          world:
            title: The World Brief
            subscribers:
              - gmt@example.com
              - email: pst@example.com
                timezone: America/Los_Angeles
                topics: [culture]
        """)
    first = world.run("send", "--date", "2026-11-01", "--timezone", "Europe/London")
    assert first.returncode == 0, first.stderr
    feed.unlink()
    later = world.run("send", "--date", "2026-11-01", "--timezone", "America/Los_Angeles")
    assert later.returncode == 0, later.stderr
    subjects = _subjects(world)
    assert subjects == {"gmt@example.com": "The World Brief: Lanterns line the quay",
                        "pst@example.com": "The World Brief: Choir sings at the lighthouse"}
