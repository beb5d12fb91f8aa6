"""Reading the policy file: YAML composed into plain data that keeps every value's line,
within bounds (depth, size, tags), and the located errors a policy is refused with."""

from __future__ import annotations

import re
import reprlib
from dataclasses import dataclass
from typing import Any

import yaml

# --- errors ---------------------------------------------------------------------

Path_ = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class PolicyIssue:
    line: int
    path: str
    message: str


class PolicyError(ValueError):
    """The policy file was refused. `issues` lists every mistake found, by line."""

    def __init__(self, source: str, issues: list[PolicyIssue]) -> None:
        self.source = source
        self.issues = tuple(sorted(issues, key=lambda i: (i.line, i.path)))
        super().__init__("\n".join(self._format(i) for i in self.issues))

    def _format(self, issue: PolicyIssue) -> str:
        line = f":{issue.line}" if issue.line else ""
        where = f" {issue.path}" if issue.path else ""
        return f"{self.source}{line}{where}: {issue.message}".translate(_ESCAPED_BREAKS)


# One issue per line: a line break inside a name or value the message quotes is escaped.
_ESCAPED_BREAKS = {ord(c): repr(c)[1:-1] for c in "\r\n\v\f\x1c\x1d\x1e\x85\u2028\u2029"}


# Values echoed in messages are cut short: a misplaced list or text may be any size.
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 80
shown = _REPR.repr


_BARE_KEY = re.compile(r"[^\s.\[\]'\"]+")


def dotted(path: Path_) -> str:
    """agents.support.tools[1]; a key that is empty or has spaces, dots or brackets: ['a.b']."""
    text = ""
    for part in path:
        if isinstance(part, int) or not _BARE_KEY.fullmatch(part):
            text += f"[{part!r}]"
        else:
            text += f".{part}" if text else part
    return text


# --- YAML with lines ------------------------------------------------------------

_TAG = "tag:yaml.org,2002:"
# YAML 1.1 types no policy value has (dates, '=' and '<<' outside a key): read as written.
_TEXT_TAGS = frozenset(_TAG + t for t in ("str", "timestamp", "value", "merge"))
_TYPED_TAGS = {
    _TAG + "null": "null",
    _TAG + "bool": "true or false",
    _TAG + "int": "a whole number",
    _TAG + "float": "a number",
}
_MAX_DEPTH = 32  # a policy nests about 6 deep; the bound keeps building and messages small
_MAX_VALUES = 100_000  # counted as aliases expand, so an alias bomb stops before it is built
_MAX_INT = 2**63 - 1  # counters and the store hold 64-bit integers


def _short_tag(tag: str) -> str:
    return tag.replace(_TAG, "!!", 1)


def _unsupported(tag: str) -> str:
    return (
        f"unsupported YAML tag '{_short_tag(tag)}' "
        "(expected plain text, numbers, true/false, null, lists and mappings)"
    )


class Refused(Exception):
    """Building stops: the document is too big or too deep to read on."""

    def __init__(self, issue: PolicyIssue) -> None:
        self.issue = issue


class Lines:
    """Plain data from YAML nodes, plus the line of every key and list item."""

    def __init__(self) -> None:
        self.lines: dict[Path_, int] = {}
        self.issues: list[PolicyIssue] = []
        self._values = 0
        self._open: set[int] = set()  # collections being built: an alias to one never ends
        self._scalars = yaml.constructor.SafeConstructor()
        self._resolver = yaml.resolver.Resolver()

    def _issue(self, line: int, path: Path_, message: str) -> None:
        self.issues.append(PolicyIssue(line, dotted(path), message))

    def _stop(self, path: Path_, message: str) -> Refused:
        return Refused(PolicyIssue(self.line_of(path), dotted(path), message))

    def build(self, node: yaml.Node, path: Path_) -> Any:
        """Raises Refused past the bounds on depth and size, and on an alias cycle."""
        self._values += 1
        if self._values > _MAX_VALUES:
            raise self._stop(path, f"more than {_MAX_VALUES} values once aliases are expanded")
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, path)
        if id(node) in self._open:
            raise self._stop(path, "an alias to a value that contains it (it would never end)")
        if len(path) >= _MAX_DEPTH:
            raise self._stop(path, f"nested more than {_MAX_DEPTH} levels deep")
        self._open.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode) and node.tag == _TAG + "map":
                return self._mapping(node, path)
            if isinstance(node, yaml.SequenceNode) and node.tag == _TAG + "seq":
                return self._sequence(node, path)
        finally:
            self._open.discard(id(node))
        line = node.start_mark.line + 1
        self._issue(line, path, _unsupported(node.tag))
        return None

    def _mapping(self, node: yaml.MappingNode, path: Path_) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            key = self._key(key_node, path)
            if key is None:
                continue
            child = (*path, key)
            if key in data:
                first = self.lines[child]
                self._issue(line, child, f"duplicate key (first at line {first})")
                continue
            self.lines[child] = line
            data[key] = self.build(value_node, child)
        return data

    def _sequence(self, node: yaml.SequenceNode, path: Path_) -> list[Any]:
        items = []
        for index, item in enumerate(node.value):
            self.lines[(*path, index)] = item.start_mark.line + 1
            items.append(self.build(item, (*path, index)))
        return items

    def _key(self, node: yaml.Node, path: Path_) -> str | None:
        """The key as a name, or None with an issue: every policy key is a name."""
        line = node.start_mark.line + 1
        if not isinstance(node, yaml.ScalarNode):
            kind = "a mapping" if isinstance(node, yaml.MappingNode) else "a list"
            self._issue(line, path, f"expected a name as key, got {kind}")
            return None
        if node.tag == _TAG + "merge":
            self._issue(line, path, "YAML merge keys ('<<') are not supported")
            return None
        if node.tag in _TEXT_TAGS:
            return str(node.value)
        what = _TYPED_TAGS.get(node.tag, f"a value tagged '{_short_tag(node.tag)}'")
        self._issue(
            line,
            (*path, node.value),
            f"expected a name as key, got {shown(node.value)}, which YAML reads as {what} "
            "(put it in quotes)",
        )
        return None

    def _scalar(self, node: yaml.ScalarNode, path: Path_) -> Any:
        line = node.start_mark.line + 1
        tag, text = node.tag, str(node.value)
        if tag in _TEXT_TAGS:
            return text
        if tag == _TAG + "bool" and text.lower() in _YAML11_WORDS:
            # YAML 1.1 reads on/off/yes/no as booleans; the policy reads them as YAML 1.2
            # does, as words: `pii: off` is the setting "off", not false.
            return text
        if tag not in _TYPED_TAGS:
            self._issue(line, path, _unsupported(tag))
            return None
        # An explicit tag can name a type its text does not have (!!int abc, !!bool maybe).
        plain = self._resolver.resolve(yaml.ScalarNode, text, (True, False))  # type: ignore[no-untyped-call]
        if plain != tag and not (tag == _TAG + "float" and plain == _TAG + "int"):
            self._issue(
                line,
                path,
                f"expected {_TYPED_TAGS[tag]} as tag '{_short_tag(tag)}' says, got {shown(text)}",
            )
            return None
        try:
            value = self._scalars.construct_object(node)
        except ValueError:  # only ints: YAML's pattern admits 0x_, Python reads 4300 digits at most
            pass
        else:
            if not isinstance(value, int) or abs(value) <= _MAX_INT:
                return value
        self._issue(
            line,
            path,
            f"expected a whole number between {-_MAX_INT - 1} and {_MAX_INT}, got {shown(text)}",
        )
        return None

    def line_of(self, path: Path_) -> int:
        """The line of the deepest part of `path` that the file has (a missing key: its parent)."""
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return 1


# What YAML 1.1 (PyYAML) reads as booleans besides true and false.
_YAML11_WORDS = frozenset({"yes", "no", "on", "off", "y", "n"})


def line_at(before: str) -> int:
    """The line reached after `before`; splitlines counts every break YAML counts."""
    return len((before + "x").splitlines())


def compose(text: str, source: str) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=yaml.CSafeLoader)
    except UnicodeEncodeError as exc:  # a lone surrogate: a str, but not text
        line = line_at(text[: exc.start])
        problem = f"unacceptable character #x{ord(text[exc.start]):04x}: a lone surrogate"
    except yaml.reader.ReaderError as exc:  # libyaml gives a byte offset into the UTF-8 text
        line = line_at(text.encode()[: exc.position].decode())
        problem = str(exc).splitlines()[0]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        # At the end of a file without a final newline libyaml marks the line after it.
        line = min(mark.line + 1, line_at(text)) if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc)
    raise PolicyError(source, [PolicyIssue(line, "", f"invalid YAML: {problem}")])
