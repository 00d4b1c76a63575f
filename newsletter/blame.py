"""Which source set a setting: the YAML file's line, a variable, or a line of `.env`.

pydantic-settings reads `NEWSLETTER_*` variables and `.env` whatever their case, and a
variable may hold one key (NEWSLETTER_SMTP__PORT) or a whole section as JSON
(NEWSLETTER_SMTP); an error must blame the one the user wrote.
"""

from __future__ import annotations

import io
import json
import os
import re
import stat
from pathlib import Path
from typing import Any

from dotenv import dotenv_values
from dotenv.parser import parse_stream
from pydantic_settings import SettingsError

from newsletter.errors import ConfigError, Problem
from newsletter.yamlfile import YamlDocument, read_regular

ENV_PREFIX = "NEWSLETTER_"
ENV_FILE = Path(".env")
DOTENV_LIMIT = 1 << 20  # a few dozen variables; more is not a .env file


def env_name(loc: tuple[Any, ...]) -> str:
    return ENV_PREFIX + "__".join(str(part) for part in loc).upper()


def _dotenv_keys() -> dict[str, tuple[str, int]]:
    """The keys of `.env`, upper-cased (pydantic-settings ignores their case), with each
    key as written and the line it is on."""
    if not ENV_FILE.is_file():
        return {}
    keys: dict[str, tuple[str, int]] = {}
    names = [str(name) for name in dotenv_values(ENV_FILE)]
    try:
        lines = ENV_FILE.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        lines = []
    for name in names:
        keys.setdefault(name.upper(), (name, 0))
    for number, text in enumerate(lines, start=1):
        key = text.strip().removeprefix("export ").partition("=")[0].strip()
        if key.upper() in keys and not keys[key.upper()][1]:
            keys[key.upper()] = (key, number)
    return keys


def _environment_keys() -> dict[str, str]:
    return {name.upper(): name for name in os.environ}


def where(loc: tuple[Any, ...], doc: YamlDocument) -> tuple[Path | str | None, int | None, str]:
    """Which source set the setting at `loc`: (file, line, field) for its `Problem`.

    The environment wins over `.env`, which wins over the YAML file; a variable can set the
    key itself (NEWSLETTER_SMTP__PORT) or a whole section as JSON (NEWSLETTER_SMTP), and
    a key no model knows arrives as the variable's own name (newsletter_bogus).
    """
    environment, dotenv = _environment_keys(), _dotenv_keys()
    dotted = ".".join(str(part) for part in loc)
    candidates = [str(loc[0]).upper()] if is_variable(loc) else []
    candidates += [env_name(loc[:n]) for n in range(len(loc), 0, -1)]
    for name in candidates:
        inside = "" if name in (candidates[0], env_name(loc)) else f"{dotted} in "
        if name in environment:
            return None, None, f"{inside}{environment[name]} (environment)"
        if name in dotenv:
            key, line = dotenv[name]
            return ENV_FILE, line or None, inside + key
    return doc.path, doc.line_of(loc), dotted


def is_variable(loc: tuple[Any, ...]) -> bool:
    """Whether `loc` is an unknown top-level key that came from a variable's own name."""
    return len(loc) == 1 and str(loc[0]).upper().startswith(ENV_PREFIX)


_SOURCE_FIELD = re.compile(r'field "(?P<field>[^"]+)" from source "(?P<source>\w+)"')


def unparsable(err: SettingsError) -> Problem:
    """A variable pydantic-settings could not decode (a section given as broken JSON).

    Its value is never shown: NEWSLETTER_SMTP may hold the password.
    """
    match = _SOURCE_FIELD.search(str(err))
    section = match["field"] if match else ""
    from_dotenv = match is not None and match["source"].startswith("DotEnv")
    keys = (_dotenv_keys() if from_dotenv
            else {name: (key, 0) for name, key in _environment_keys().items()})
    values = dotenv_values(ENV_FILE) if from_dotenv else os.environ
    prefix = env_name((section,)) if section else ENV_PREFIX.rstrip("_")
    found = [(key, line) for name, (key, line) in keys.items()
             if name == prefix or name.startswith(prefix + "__")]
    broken = [(key, line) for key, line in found if _not_json(values.get(key))]
    key, line = (broken or found or [(prefix, 0)])[0]
    reason = _json_error(values.get(key))
    what = "not valid JSON" + (f" ({reason})" if reason else "")
    if key.upper() == prefix:
        fix = (f'write the section as a JSON object such as {{"host": "mail.example.com"}}, '
               f"or set one key at a time ({prefix}__KEY)")
    else:
        fix = 'write the list as JSON, e.g. ["articles", "more/articles"]'
    if from_dotenv:
        return Problem(what, ENV_FILE, line or None, key, fix)
    return Problem(what, None, None, f"{key} (environment)", fix)


def _json_error(value: str | None) -> str | None:
    """Where JSON decoding fails (line and column, never the text itself)."""
    if value is None:
        return None
    try:
        json.loads(value)
    except ValueError as err:
        if isinstance(err, json.JSONDecodeError):
            return f"{err.msg} at line {err.lineno} column {err.colno}"
        return "cannot be decoded"
    return None


def _not_json(value: str | None) -> bool:
    return value is not None and value.lstrip()[:1] in ("{", "[") and bool(_json_error(value))


def check_dotenv() -> None:
    """`.env` must be UTF-8 text that can be read; else one line naming it, not a traceback.

    pydantic-settings reads a FIFO there too (it would wait for a writer forever), so what
    is not a regular file is refused before it looks; a folder (a virtualenv called `.env`)
    is not a settings file and is left alone, as pydantic-settings does.
    """
    try:
        mode = os.stat(ENV_FILE).st_mode
    except FileNotFoundError:
        return
    except OSError as err:
        raise ConfigError(f"cannot read .env ({err.strerror})", file=ENV_FILE,
                          fix="make it readable, or remove it") from err
    if stat.S_ISDIR(mode):
        return
    data = read_regular(ENV_FILE, ".env", limit=DOTENV_LIMIT)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise ConfigError("not UTF-8 text", file=ENV_FILE, line=line,
                          fix="save it as UTF-8") from err
    bad = unparsable_dotenv_line(text)
    if bad is not None:
        # python-dotenv would only log this and drop the line: a password lost that way
        # comes back as a misleading "no password". The line itself may be a secret.
        raise ConfigError("cannot parse this line (an unclosed quote, or no '=')",
                          file=ENV_FILE, line=bad,
                          fix="write it as NAME=value, and close any quote you open")


def unparsable_dotenv_line(text: str) -> int | None:
    """The number of the first line of `.env` text that python-dotenv cannot parse, or None.

    A statement's text starts with the blank lines before it; the line that is wrong is
    the first one with something on it.
    """
    for binding in parse_stream(io.StringIO(text)):
        if binding.error:
            original = binding.original.string
            blank = original[:len(original) - len(original.lstrip())]
            return binding.original.line + blank.count("\n")
    return None
