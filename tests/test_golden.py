"""Golden files: the fixture project's issue as text, and one whole .eml, normalised.

After a deliberate template change, refresh them with `UPDATE_GOLDEN=1 make test` and
review the diff like code.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.conftest import ISSUE_DATE, Project

GOLDEN = Path(__file__).parent / "golden"
# Unsubscribe tokens are deterministic for one secret; a generated one differs per project.
SECRET = {"NEWSLETTER_UNSUBSCRIBE__SECRET": "golden-files-unsubscribe-secret-0123456789"}


def _normalise(data: str) -> str:
    data = re.sub(r"^Date: [^\r\n]*", "Date: <date>", data, flags=re.M)
    return re.sub(r"=+\d{10,}==|=_nl_[0-9a-f]{24}", "<boundary>", data)


def _check(name: str, actual: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_bytes(actual.encode("utf-8"))
    if not path.exists():
        pytest.fail(f"{path} is missing; run with UPDATE_GOLDEN=1 to create it")
    assert actual == path.read_bytes().decode("utf-8")


def test_text_preview_matches_golden(project: Project) -> None:
    result = project.run("preview", "--date", ISSUE_DATE, "--subscriber", "zoe@example.org",
                         env=SECRET)
    assert result.returncode == 0, result.stderr
    folder = project.outbox / "preview" / "morning-brief"
    text = (folder / f"{ISSUE_DATE}.zoe@example.org.txt").read_text()  # the reader's own copy
    _check("morning-brief.txt", text)


def test_eml_matches_golden(project: Project) -> None:
    result = project.run("send", "--date", ISSUE_DATE, env=SECRET)
    assert result.returncode == 0, result.stderr
    eml = project.outbox / "mail" / "morning-brief" / ISSUE_DATE / "zoe@example.org.eml"
    _check("zoe@example.org.eml", _normalise(eml.read_bytes().decode("ascii")))
