"""The project the reader command tests share: a list with sections, and its ledger."""

from __future__ import annotations

import pytest

from newsletter.ledger import SqliteLedger
from newsletter.settings import load_settings
from tests.conftest import Project

LIST = "morning-brief"
SECTIONS_YAML = """\
lists:
  morning-brief:
    title: The Morning Brief
    sections: [city, culture]
    subscribers:
      - email: ada@example.com
        name: Ada Lovelace
      - linus@example.com
"""


@pytest.fixture
def proj(project: Project) -> Project:
    project.write("config/subscribers.yaml", SECTIONS_YAML)
    return project


def ledger(project: Project) -> SqliteLedger:
    return SqliteLedger(load_settings(project.settings).ledger)
