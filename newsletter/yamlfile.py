"""Read YAML and remember where each value came from, so errors can name the line."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from newsletter.errors import ConfigError, Problem

Location = tuple[Hashable, ...]


@dataclass
class YamlDocument:
    """Parsed data plus the 1-based line of every mapping key and sequence item."""

    path: Path
    data: Any
    lines: dict[Location, int] = field(default_factory=dict)
    duplicate_keys: list[Problem] = field(default_factory=list)

    def line_of(self, location: Location) -> int | None:
        """The line of `location`, or of its nearest parent that has one."""
        loc = tuple(location)
        while loc:
            if loc in self.lines:
                return self.lines[loc]
            loc = loc[:-1]
        return None


def read_text(path: Path, what: str, error: type[ConfigError] = ConfigError) -> str:
    """Read a UTF-8 text file, turning OS and decoding errors into a one-line `error`."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise error(f"{what} not found", file=path, fix="check the path") from err
    except IsADirectoryError as err:
        raise error(f"{what} is a folder, not a file", file=path) from err
    except PermissionError as err:
        raise error(f"cannot read {what} (permission denied)", file=path,
                    fix="check the file's permissions") from err
    except UnicodeDecodeError as err:
        raise error(f"{what} is not UTF-8 text ({err.reason} at byte {err.start})",
                    file=path, fix="save it as UTF-8") from err
    except OSError as err:
        raise error(f"cannot read {what}: {err.strerror}", file=path) from err


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """The safe loader (libyaml's when installed: several times faster on long lists)."""

    def construct_yaml_timestamp(self, node: yaml.ScalarNode) -> Any:
        # An impossible date such as 2026-02-30 stays text, so validation can name the key.
        try:
            return super().construct_yaml_timestamp(node)
        except ValueError:
            return self.construct_scalar(node)


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader.construct_yaml_timestamp)


def parse_yaml(text: str, path: Path, *, first_line: int = 1) -> YamlDocument:
    """Parse one YAML document; a syntax error becomes a `ConfigError` naming the line."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + first_line if mark else None
        reason = err.problem or err.context or "invalid YAML"
        if err.context and err.context_mark and err.problem_mark:
            # e.g. an unclosed bracket: say where it was opened, not just where the file ended
            reason = (f"{reason}, {err.context} that starts on line "
                      f"{err.context_mark.line + first_line}")
        raise ConfigError(f"invalid YAML: {reason}", file=path, line=line,
                          fix="check indentation, colons and quotes") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"invalid YAML: {err}", file=path) from err
    finally:
        loader.dispose()
    doc = YamlDocument(path=path, data=data)
    if node is not None:
        _record_lines(node, (), doc, first_line)
    return doc


def load_yaml(path: Path, what: str) -> YamlDocument:
    """Read and parse a YAML file."""
    return parse_yaml(read_text(path, what), path)


def _record_lines(node: yaml.Node, loc: Location, doc: YamlDocument, first_line: int) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[Hashable, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            line = key_node.start_mark.line + first_line
            if key in seen:
                doc.duplicate_keys.append(Problem(
                    f"key {key!r} appears twice (also on line {seen[key]}); the last one wins",
                    doc.path, line))
            seen[key] = line
            doc.lines[(*loc, key)] = line
            _record_lines(value_node, (*loc, key), doc, first_line)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            doc.lines[(*loc, index)] = item.start_mark.line + first_line
            _record_lines(item, (*loc, index), doc, first_line)
