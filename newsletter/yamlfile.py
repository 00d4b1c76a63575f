"""Read YAML and remember where each value came from, so errors can name the line."""

from __future__ import annotations

import codecs
import errno
import os
import stat
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from newsletter.errors import ConfigError, NewsletterError, Problem

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


def read_text(path: Path, what: str, error: type[NewsletterError] = ConfigError, *,
              limit: int | None = None) -> str:
    """Read a UTF-8 text file, turning OS and decoding errors into a one-line `error`.

    Only a regular file is read (a FIFO would wait for a writer forever, /dev/zero never
    ends); `limit` caps its size in bytes.
    """
    data = read_regular(path, what, error, limit=limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise error(f"{what} is not UTF-8 text ({err.reason} at byte {err.start})",
                    file=path, fix="save it as UTF-8") from err


def read_regular(path: Path, what: str, error: type[NewsletterError] = ConfigError, *,
                 limit: int | None = None) -> bytes:
    """The bytes of the regular file `path` (at most `limit`), or a one-line `error`."""
    with open_regular(path, what, error) as file:
        try:
            data = file.read() if limit is None else file.read(limit + 1)
        except IsADirectoryError as err:
            raise error(f"{what} is a folder, not a file", file=path) from err
        except OSError as err:
            raise error(f"cannot read {what}: {err.strerror or err}", file=path) from err
    if limit is not None and len(data) > limit:
        raise error(f"{what} is larger than {_size(limit)}", file=path,
                    fix="is it the right file? split or shorten it")
    return data


def open_regular(path: Path, what: str,
                 error: type[NewsletterError] = ConfigError) -> IO[bytes]:
    """The regular file `path` opened for reading in binary, or a one-line `error`.

    The file is checked before it is opened and again once open (it may have been swapped
    for a FIFO in between); opening without blocking means a FIFO cannot hold the open.
    """
    try:
        _check_regular(os.stat(path).st_mode, path, what, error)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError as err:
        raise error(f"{what} not found", file=path, fix="check the path") from err
    except PermissionError as err:
        raise error(f"cannot read {what} (permission denied)", file=path,
                    fix="check the file's permissions") from err
    except OSError as err:
        if err.errno == errno.ENXIO:  # a socket, or a device with nothing behind it
            raise error(f"{what} is not a regular file", file=path,
                        fix="use a regular file there") from err
        raise error(f"cannot read {what}: {err.strerror or err}", file=path) from err
    file = open(fd, "rb", closefd=True)  # noqa: SIM115  # the caller closes it
    try:
        _check_regular(os.fstat(file.fileno()).st_mode, path, what, error)
    except BaseException:
        file.close()
        raise
    return file


class _Utf8Stream:
    """A binary file read as UTF-8 text in pieces, so a long file is never whole in memory;
    a byte that is not UTF-8 is the same one-line error as `read_text` gives."""

    def __init__(self, file: IO[bytes], path: Path, what: str) -> None:
        self.file, self.path, self.what = file, path, what
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.offset = 0  # bytes read before the current piece

    def read(self, size: int = -1) -> str:
        try:
            data = self.file.read(size)
        except OSError as err:
            raise ConfigError(f"cannot read {self.what}: {err.strerror or err}",
                              file=self.path) from err
        held = len(self.decoder.getstate()[0])  # the start of a character cut in two
        try:
            text = self.decoder.decode(data, final=not data)
        except UnicodeDecodeError as err:
            raise ConfigError(f"{self.what} is not UTF-8 text ({err.reason} at byte "
                              f"{self.offset - held + err.start})", file=self.path,
                              fix="save it as UTF-8") from err
        self.offset += len(data)
        return text


_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _check_regular(mode: int, path: Path, what: str, error: type[NewsletterError]) -> None:
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise error(f"{what} is a folder, not a file", file=path)
    kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    raise error(f"{what} is {kind}, not a regular file", file=path,
                fix="use a regular file there")


def _size(limit: int) -> str:
    return f"{limit // 2**20} MB" if limit >= 2**20 else f"{limit} bytes"


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """The safe loader (libyaml's when installed: several times faster on long lists)."""

    def construct_yaml_timestamp(self, node: yaml.ScalarNode) -> Any:
        # An impossible date such as 2026-02-30 stays text, so validation can name the key.
        try:
            return super().construct_yaml_timestamp(node)
        except ValueError:
            return self.construct_scalar(node)


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader.construct_yaml_timestamp)


# Where a streamed item is handed over: its location (ending in its index), its value and
# its line. It is not kept in the document.
OnItem = Callable[[Location, Any, int], None]


def parse_yaml(text: str | _Utf8Stream, path: Path, *, first_line: int = 1,
               key_depth: int | None = None, stream: Callable[[Location], bool] | None = None,
               on_item: OnItem | None = None) -> YamlDocument:
    """Parse one YAML document; a syntax error becomes a `ConfigError` naming the line.

    The data is built straight from the parser's events: no node tree is kept, so a
    subscriber file of 100,000 entries costs its data, not ten times that. Lines are
    remembered for every sequence item and for mapping keys less than `key_depth` deep.
    The items of each sequence whose location `stream` accepts go to `on_item` one at a
    time as each is complete, and are not kept: that sequence stays empty in the data.
    """
    loader = _Loader(text)
    doc = YamlDocument(path=path, data=None)
    try:
        doc.data = _Builder(loader, doc, first_line, key_depth, stream, on_item).build()
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
    return doc


_NO_KEY = object()


class _Builder:
    """Python data from YAML events, with the line of each item and key."""

    def __init__(self, loader: Any, doc: YamlDocument, first_line: int,
                 key_depth: int | None, stream: Callable[[Location], bool] | None = None,
                 on_item: OnItem | None = None) -> None:
        self.loader, self.doc, self.first_line = loader, doc, first_line
        self.key_depth = key_depth
        self.stream, self.on_item = stream, on_item
        self.anchors: dict[str, Any] = {}
        # (container, its location, pending key of a mapping, key lines seen in a mapping)
        self.stack: list[tuple[Any, Location, Any, dict[Hashable, int]]] = []
        self.result: Any = None
        # Streamed sequences (by id) → items handed over so far; and the streamed items
        # still being built: (their stack depth, location, line).
        self.streamed: dict[int, int] = {}
        self.pending: list[tuple[int, Location, int]] = []

    def build(self) -> Any:
        while True:
            event = self.loader.get_event()
            if isinstance(event, yaml.StreamEndEvent):
                return self.result
            if isinstance(event, yaml.ScalarEvent):
                self._add(self._scalar(event), event)
            elif isinstance(event, yaml.AliasEvent):
                if event.anchor not in self.anchors:
                    raise yaml.composer.ComposerError(
                        None, None, f"found undefined alias {event.anchor!r}",
                        event.start_mark)  # type: ignore[arg-type]  # libyaml's Mark is one too
                self._add(self.anchors[event.anchor], event)
            elif isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
                container: Any = {} if isinstance(event, yaml.MappingStartEvent) else []
                location = self._add(container, event)
                self.stack.append((container, location, _NO_KEY, {}))
                if (isinstance(container, list) and self.stream is not None
                        and self.stream(location)):
                    self.streamed[id(container)] = 0
            elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
                container, location, _, _ = self.stack.pop()
                self.streamed.pop(id(container), None)
                if self.pending and self.pending[-1][0] == len(self.stack):
                    _, here, line = self.pending.pop()
                    self._hand_over(here, container, line)

    def _scalar(self, event: Any) -> Any:
        tag = event.tag
        if tag is None or tag == "!":
            tag = self.loader.resolve(yaml.ScalarNode, event.value, event.implicit)
        node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
        if tag == "tag:yaml.org,2002:merge":
            raise yaml.constructor.ConstructorError(
                None, None, "merge keys (<<) are not supported; write the keys out",
                event.start_mark)
        construct = self.loader.yaml_constructors.get(tag) or \
            self.loader.yaml_constructors[None]
        return construct(self.loader, node)

    def _add(self, value: Any, event: Any) -> Location:
        """Put `value` in its parent; return its location."""
        line = event.start_mark.line + self.first_line
        if getattr(event, "anchor", None) and not isinstance(event, yaml.AliasEvent):
            self.anchors[event.anchor] = value
        if not self.stack:
            self.result = value
            return ()
        parent, location, key, seen = self.stack[-1]
        if isinstance(parent, list) and id(parent) in self.streamed:
            here = (*location, self.streamed[id(parent)])
            self.streamed[id(parent)] += 1
            if isinstance(value, dict | list):  # handed over once its end is read
                self.pending.append((len(self.stack), here, line))
            else:
                self._hand_over(here, value, line)
            return here
        if isinstance(parent, list):
            here = (*location, len(parent))
            if self.key_depth is None or len(here) <= self.key_depth:
                self.doc.lines[here] = line
            parent.append(value)
            return here
        if key is _NO_KEY:  # this value is a key
            if not isinstance(value, Hashable) or isinstance(value, dict | list):
                raise yaml.constructor.ConstructorError(
                    None, None, "a key must be a plain value", event.start_mark)
            if value in seen:
                self.doc.duplicate_keys.append(Problem(
                    f"key {value!r} appears twice (also on line {seen[value]}); the last one "
                    "wins", self.doc.path, line))
            seen[value] = line
            if self.key_depth is None or len(location) < self.key_depth:
                self.doc.lines[(*location, value)] = line
            self.stack[-1] = (parent, location, value, seen)
            return location
        parent[key] = value
        self.stack[-1] = (parent, location, _NO_KEY, seen)
        return (*location, key)


    def _hand_over(self, location: Location, value: Any, line: int) -> None:
        assert self.on_item is not None
        self.on_item(location, value, line)


def load_yaml(path: Path, what: str, key_depth: int | None = None, *,
              stream: Callable[[Location], bool] | None = None,
              on_item: OnItem | None = None) -> YamlDocument:
    """Read and parse a YAML file; with `stream`, read it in pieces (see `parse_yaml`)."""
    if stream is None:
        return parse_yaml(read_text(path, what), path, key_depth=key_depth)
    with open_regular(path, what) as file:
        return parse_yaml(_Utf8Stream(file, path, what), path, key_depth=key_depth,
                          stream=stream, on_item=on_item)
