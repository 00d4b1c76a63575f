"""The Makefile's checks hold on the tree as it is: a `make lint` or `make test` that fails
on a clean checkout tells a new user the project is broken when it is not."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

BIN = Path(sys.executable).parent


def _recipe(target: str) -> list[str]:
    """The commands of `target` in the Makefile, `$(BIN)/` made this interpreter's folder."""
    text = (REPO / "Makefile").read_text(encoding="utf-8")
    found = re.search(rf"^{re.escape(target)}:[^\n]*\n((?:\t[^\n]*\n)+)", text, re.MULTILINE)
    assert found is not None, f"no {target} target in the Makefile"
    return [line.strip().replace("$(BIN)/", f"{BIN}/")
            for line in found.group(1).splitlines()]


@pytest.mark.parametrize("target", ["lint", "test"])
def test_every_ruff_check_of_the_makefile_passes_on_the_tree(target: str) -> None:
    # ruff is quick; mypy and pytest are what `make test` runs anyway.
    commands = [c for c in _recipe(target) if c.startswith(f"{BIN}/ruff ")]
    assert commands, f"`make {target}` runs no ruff"
    if not (BIN / "ruff").exists():
        pytest.fail(f"ruff is not installed beside {sys.executable}: pip install -e '.[test]'")
    for command in commands:
        done = subprocess.run(command.split(), cwd=REPO, capture_output=True, text=True,
                              check=False)
        assert done.returncode == 0, f"`{command}` fails on the tree:\n{done.stdout[-2000:]}"
