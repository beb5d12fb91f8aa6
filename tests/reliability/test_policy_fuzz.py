"""Hypothesis on the policy loader: any text or bytes either load or are refused with
errors located by file, line and (for a file that is a mapping of names) key path;
no other exception ever escapes, and no input makes loading explode in time or memory."""

from __future__ import annotations

import copy
import math
import resource
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral.policy import Policy, PolicyError, load_policy, parse_policy

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "corral.yaml"
SOURCE = "fuzz.yaml"
ENV = {"SIM_API_KEY": "sim"}

# Bounded so the whole file runs in well under 30 s on two cores; no example database,
# so a run leaves nothing behind and a failure prints its own reproduction.
FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def example_text() -> str:
    return EXAMPLE.read_text()


def visible_lines(text: str) -> int:
    """An upper bound on the lines a mark can name: splitlines counts every YAML break."""
    return len((text + "x").splitlines())


def check(text: str, *, keyed: bool) -> Policy | None:
    """Load `text`; on refusal, assert every issue is located. `keyed`: every issue also
    names a key path (true of any file that is a mapping of names)."""
    try:
        return parse_policy(text, source=SOURCE, env=ENV)
    except PolicyError as error:
        assert_located(error, SOURCE, visible_lines(text), keyed=keyed)
        return None


def assert_located(error: PolicyError, source: str, last_line: int, *, keyed: bool) -> None:
    """Each issue on a line of its own: `source:line key.path: message`, within the file."""
    assert error.source == source
    assert error.issues
    shown = str(error).splitlines()
    assert len(shown) == len(error.issues)
    for issue, text in zip(error.issues, shown, strict=True):
        assert 1 <= issue.line <= last_line, issue
        assert issue.message and (issue.path or not keyed), issue
        where = f"{source}:{issue.line}" + (f" {issue.path}" if issue.path else "")
        assert text.startswith(f"{where}: "), text


# --- (a) arbitrary text and bytes ---------------------------------------------------

FRAGMENTS = [
    # structure
    ":", ": ", "- ", "? ", ", ", "{", "}", "[", "]", "\n", "\n  ", "\n    ", "\t", " ", "#",
    "'", '"', "\\", "|\n", ">\n", "---\n", "...\n", "%YAML 1.1\n", "%TAG !e! tag:e.com,2000:\n",
    # anchors, aliases, tags
    "&a ", "*a", "&b ", "*b", "<<: *a", "!!python/object:os.system ", "!!python/name:os.system",
    "!foo ", "!e!bar ", "!!int ", "!!float ", "!!bool ", "!!null ", "!!str ", "!!binary ",
    "!!timestamp ", "!!set ", "!!omap ", "!!map ", "!!seq ", "!<tag:yaml.org,2002:int> ",
    # scalars YAML 1.1 reads as something else, and numbers at the edges
    "<<", "=", "~", "null", "yes", "on", "true", "0x_", "0b_", "0o7", "0777", "1_000", "1:30",
    ".inf", "-.inf", ".nan", "1e400", "9" * 40, "0x" + "f" * 40, "-" + "9" * 25, "2020-13-45",
    "2020-01-01", "2001-12-14t21:59:43.10-05:00", "10m", "500ms", "-5s", "0.50", "$0.50",
    # policy keys, so fragments reach the schema
    "version: 1\n", "version", "store", "retry", "max_attempts", "agents", "support", "type",
    "route", "tools", "approvals", "when", "models", "providers", "global", "source",
    # characters the reader refuses or treats specially
    "\x00", "\x07", "\x1b", "\ufeff", "\ufffe", "\r", "\r\n", "\x85", "\u2028", "\ud800",
    "é", "\U0001f600",
]  # fmt: skip

soup = st.lists(
    st.one_of(
        st.sampled_from(FRAGMENTS), st.text(st.characters(exclude_categories=()), max_size=4)
    ),
    max_size=40,
).map("".join)


@st.composite
def spliced_example(draw: st.DrawFn) -> str:
    """The example with a slice replaced by soup, or a line repeated (duplicate keys)."""
    text = example_text()
    if draw(st.booleans()):
        lines = text.splitlines(keepends=True)
        index = draw(st.integers(0, len(lines) - 1))
        return "".join([*lines[: index + 1], lines[index], *lines[index + 1 :]])
    start = draw(st.integers(0, len(text)))
    end = draw(st.integers(start, min(len(text), start + 40)))
    return text[:start] + draw(soup) + text[end:]


@st.composite
def deep(draw: st.DrawFn) -> str:
    """Nesting up to past libyaml's own limit, in flow and block style."""
    depth = draw(st.integers(0, 1200))
    leaf = draw(st.sampled_from(["1", "x", "*a", "[]", "{}"]))
    style = draw(st.sampled_from(["flow-list", "flow-map", "block-list", "block-map"]))
    if style == "flow-list":
        body = "[" * depth + leaf + "]" * depth
    elif style == "flow-map":
        body = "{k: " * depth + leaf + "}" * depth
    elif style == "block-list":
        body = "\n" + "".join("  " * i + "-\n" for i in range(depth)) + "  " * depth + leaf
    else:
        body = "\n" + "".join("  " * i + "k:\n" for i in range(depth)) + "  " * depth + leaf
    key = draw(st.sampled_from(["tools", "retry", "approvals", "agents", "nowhere"]))
    return f"version: 1\n{key}: &a {body}\n"


@st.composite
def alias_bomb(draw: st.DrawFn) -> str:
    """Billion laughs: each level lists the one before `width` times."""
    levels = draw(st.integers(2, 12))
    width = draw(st.integers(2, 12))
    flow = draw(st.booleans())
    lines = ["version: 1", "x0: &a0 " + ("[lol]" if flow else "lol")]
    for level in range(1, levels):
        items = [f"*a{level - 1}"] * width
        lines.append(f"x{level}: &a{level} [{', '.join(items)}]")
    where = draw(st.sampled_from(["tools: [*a{}]", "routes: {{r: *a{}}}", "agents: *a{}"]))
    lines.append(where.format(levels - 1))
    return "\n".join(lines) + "\n"


@FUZZ
@given(
    st.one_of(
        st.text(st.characters(exclude_categories=())),
        soup,
        st.builds("version: 1\n{}".format, soup),
    )
)
def test_any_text_loads_or_is_refused_with_located_errors(text: str) -> None:
    check(text, keyed=False)


@FUZZ
@given(spliced_example())
def test_a_damaged_example_loads_or_is_refused_with_located_errors(text: str) -> None:
    check(text, keyed=False)


@settings(FUZZ, max_examples=60)
@given(deep())
def test_deep_nesting_is_refused_with_a_located_error(text: str) -> None:
    check(text, keyed=False)


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


@settings(FUZZ, max_examples=20)
@given(alias_bomb())
def test_alias_bombs_are_refused_without_building_them(text: str) -> None:
    before = peak_rss()
    check(text, keyed=True)
    # Up to 12**11 values if expanded; loading stops at 100,000 of them.
    assert peak_rss() - before < 128 * 2**20


raw_bytes = st.lists(
    st.one_of(
        st.binary(max_size=4),
        st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xef\xbb\xbf", b"\xff\xfe\x00"]),
        soup.map(lambda text: text.encode("utf-8", "surrogatepass")),
    ),
    max_size=20,
).map(b"".join)


@pytest.fixture(scope="module")
def policy_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / SOURCE


@FUZZ
@given(st.one_of(raw_bytes, st.builds(lambda b: example_text().encode() + b, raw_bytes)))
def test_any_file_loads_or_is_refused_with_located_errors(policy_file: Path, data: bytes) -> None:
    policy_file.write_bytes(data)
    try:
        load_policy(policy_file, env=ENV)
    except PolicyError as error:
        last_line = visible_lines(data.decode("utf-8", "replace"))
        assert_located(error, str(policy_file), last_line, keyed=False)


# --- (b) structurally plausible policies -----------------------------------------------

Path_ = tuple[str | int, ...]


EXAMPLE_DATA = yaml.load(example_text(), Loader=yaml.CSafeLoader)


def example_data() -> dict[str, Any]:
    data = copy.deepcopy(EXAMPLE_DATA)
    assert isinstance(data, dict)
    return data


def walk(data: Any, path: Path_ = ()) -> Iterator[tuple[Path_, Any]]:
    """Every (path, value) of `data`, the root first."""
    yield path, data
    if isinstance(data, dict | list):
        for key, value in data.items() if isinstance(data, dict) else enumerate(data):
            yield from walk(value, (*path, key))


def parent_of(data: Any, path: Path_) -> Any:
    for part in path[:-1]:
        data = data[part]
    return data


KEYS = sorted({str(path[-1]) for path, _ in walk(example_data()) if path})
NAMES = st.one_of(st.sampled_from([*KEYS, "source", "global_", "<<", ""]), st.text(max_size=8))
EDGE_NUMBERS = [-1, 0, 1.5, 2**63, -(2**63) - 1, 10**30, 1e308, math.inf, -math.inf, math.nan]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.sampled_from(EDGE_NUMBERS),
    st.text(max_size=12),
    st.sampled_from(["10m", "1h", "-1s", "10", "1e3s", "0.5", "$1", "day", "read", "high"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(NAMES, st.integers(), st.booleans()), inner, max_size=4),
    ),
    max_leaves=8,
)
durations = st.from_regex(r"\A-?[0-9]{0,400}(\.[0-9]*)?\s*(ms|s|m|h|d|w|x|)\Z")
rules = st.one_of(
    st.lists(
        st.sampled_from([*"()[]{}.,!?:'\"\\ab01_ -+*/%<>=&|$", "scope", "args", "size"]),
        max_size=12,
    ).map("".join),
    st.sampled_from(["", " ", "scop == 1", "shout(tool)", "args.rows >", "size(args) > 1"]),
)
# Keys whose values name something defined elsewhere in the file.
REFERENCES = {"type", "route", "tools", "provider", "summarizer", "team"}


def is_duration(value: object) -> bool:
    return isinstance(value, str) and value[:1].isdigit() and value[-1:] in ("s", "m", "h", "d")


# Each edit: which (path, value) it applies to, and what it writes there.
EDITS: dict[str, tuple[Callable[[Path_, Any], bool], st.SearchStrategy[Any]]] = {
    "retype": (lambda path, value: bool(path), values),
    "number": (
        lambda path, value: isinstance(value, int | float) and not isinstance(value, bool),
        st.one_of(st.sampled_from(EDGE_NUMBERS), scalars),
    ),
    "duration": (lambda path, value: is_duration(value), durations),
    "rule": (lambda path, value: path[-1:] == ("when",), rules),
    "reference": (lambda path, value: bool(REFERENCES & {*map(str, path[-2:])}), NAMES),
}
STRUCTURE: dict[str, Callable[[Path_, Any], bool]] = {
    "drop": lambda path, value: bool(path),
    "rename": lambda path, value: bool(path) and isinstance(path[-1], str),
    "add": lambda path, value: isinstance(value, dict),
}


@st.composite
def mutated_example(draw: st.DrawFn) -> str:
    """The example after one to four edits: a key dropped, renamed or added, a value of
    the wrong type, a number out of range, a bad duration or rule, an unknown reference."""
    data = example_data()
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from([*STRUCTURE, *EDITS]))
        fits = STRUCTURE[kind] if kind in STRUCTURE else EDITS[kind][0]
        targets = [(path, value) for path, value in walk(data) if fits(path, value)]
        if not targets:
            continue
        path, value = draw(st.sampled_from(targets))
        if kind == "add":
            value[draw(NAMES)] = draw(values)
            continue
        parent, key = parent_of(data, path), path[-1]
        if kind == "drop":
            del parent[key]
        elif kind == "rename":
            parent[draw(st.one_of(NAMES, st.integers()))] = parent.pop(key)
        else:
            parent[key] = draw(EDITS[kind][1])
    flow = draw(st.sampled_from([False, None, True]))
    return yaml.dump(
        data, Dumper=yaml.CSafeDumper, sort_keys=False, default_flow_style=flow, allow_unicode=True
    )


def test_the_example_loads_through_the_same_dump() -> None:
    # Mutations start from a policy that loads, so each refusal is a mutation's doing.
    assert check(yaml.safe_dump(example_data(), sort_keys=False), keyed=True) is not None


@settings(FUZZ, max_examples=400)
@given(mutated_example())
def test_a_mutated_example_loads_or_names_each_mistake_by_line_and_key(text: str) -> None:
    check(text, keyed=True)
