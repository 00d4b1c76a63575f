"""Settings: YAML + environment + .env, validated once, secrets never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from newsletter.errors import ConfigError
from newsletter.settings import load_settings
from tests.conftest import Project


def test_environment_overrides_yaml(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSLETTER_SMTP__HOST", "mail.example.net")
    monkeypatch.setenv("NEWSLETTER_DELIVERY__BACKEND", "console")
    settings = load_settings(project.settings)
    assert settings.smtp.host == "mail.example.net"
    assert settings.delivery.backend == "console"
    assert settings.smtp.port == 2525  # untouched keys still come from the file


def test_password_comes_from_dotenv_and_is_masked(project: Project) -> None:
    (project.root / ".env").write_text("NEWSLETTER_SMTP__PASSWORD=hunter2-secret\n")
    settings = load_settings(project.settings)
    assert settings.smtp.password is not None
    assert settings.smtp.password.get_secret_value() == "hunter2-secret"
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings.masked())
    result = project.run("config", "show")
    assert result.returncode == 0
    assert "hunter2" not in result.stdout and "password: '**********'" in result.stdout


def test_password_in_yaml_is_refused_without_echoing_it(project: Project) -> None:
    text = project.settings.read_text().replace("  timeout: 5\n",
                                                "  timeout: 5\n  password: topsecret99\n")
    project.settings.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_settings(project.settings)
    message = str(caught.value)
    assert "smtp.password" in message and "NEWSLETTER_SMTP__PASSWORD" in message
    assert "topsecret99" not in message
    assert f"{project.settings}:20: smtp.password:" in message


def test_every_invalid_value_is_reported_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "newsletter.yaml"
    path.write_text("delivery:\n  backend: pigeon\nsmtp:\n  port: 0\n  securty: ssl\n"
                    "schedule:\n  time: '7am'\n  timezone: Mars/Olympus\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    lines = str(caught.value).splitlines()
    assert len(lines) == 5
    assert lines[0].startswith(f"{path}:2: delivery.backend: Input should be 'file', 'smtp'")
    assert lines[1].startswith(f"{path}:4: smtp.port:")
    assert lines[2].startswith(f"{path}:5: smtp.securty: unknown setting — allowed keys here:")
    assert lines[3] == f'{path}:7: schedule.time: must be a 24-hour time "HH:MM", e.g. "07:00"'
    assert lines[4].startswith(f"{path}:8: schedule.timezone: unknown time zone")


def test_unquoted_time_is_understood(tmp_path: Path) -> None:
    path = tmp_path / "newsletter.yaml"
    path.write_text("schedule:\n  time: 6:45\n")  # YAML 1.1 reads this as 405
    assert load_settings(path).schedule.time == "06:45"


def test_missing_settings_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="settings file not found"):
        load_settings(tmp_path / "nope.yaml")
