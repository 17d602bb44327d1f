"""match.lua runs as a function library (common/lua.py ``Library``): its modules' locals
outlive a call, so each call must start from state set up by ``per_call``. This checks the
rule on the text: every file-level local is a constant (UPPER_CASE, or a namespace table whose
constructor holds only UPPER_CASE fields), or is declared without a value and assigned in a
``per_call`` block of the same file. The behaviour (a library call leaves what a fresh
script leaves) is tested against a real redis-server in test_matcher_property."""

from __future__ import annotations

import re
from pathlib import Path

from common.lua import CALL_LINE, included_files, read_script
from services.matcher.consumer import LUA_DIR

MATCH = LUA_DIR / "match.lua"
LOCAL = re.compile(r"^local (?!function\b)([\w, ]+?)\s*(=\s*(.*))?(--.*)?$")
MADE_AT_LOAD = {"starts", "main"}  # per_call's list of what each call runs first; the call


def _names(declared: str) -> list[str]:
    return [name.strip() for name in declared.split(",")]


def _per_call_assigned(text: str) -> set[str]:
    """Names assigned (``a, b = ...`` or ``a.f = ...``) inside the file's per_call blocks."""
    assigned: set[str] = set()
    for block in re.findall(r"^per_call\(function\(.*?\)(.*?)end\)$", text, re.M | re.S):
        for targets in re.findall(r"([\w., ]+?)\s*=[^=]", block):
            assigned.update(name.split(".")[0] for name in _names(targets))
    return assigned


def _constructor(lines: list[str], first: int) -> str:
    """The table constructor that starts on ``lines[first]``, through its closing brace."""
    depth, parts = 0, []
    for line in lines[first:]:
        code = line.split("--", 1)[0]
        parts.append(code)
        depth += code.count("{") - code.count("}")
        if depth <= 0:
            break
    return "\n".join(parts).split("=", 1)[1]


def violations(path: Path) -> list[str]:
    text = path.read_text()
    assigned = _per_call_assigned(text)
    found = []
    lines = text.splitlines()
    for number, line in enumerate(lines, start=1):
        match = LOCAL.match(line)
        if not match:
            continue
        names, value = _names(match.group(1)), (match.group(3) or "").strip()
        if all(name.isupper() or name.startswith("K_") for name in names) and value:
            continue  # a constant
        for name in names:
            if name in MADE_AT_LOAD:
                continue
            if value.startswith("{"):
                fields = re.findall(r"(\w+)\s*=[^=]", _constructor(lines, number - 1))
                if name not in assigned and not fields:
                    continue  # a namespace of functions
                if all(field.isupper() for field in fields):
                    continue  # a namespace; per-call fields are set in per_call
                found.append(f"{path.name}:{number}: {name}: lowercase field at load")
            elif value:
                found.append(f"{path.name}:{number}: {name} gets a value at load")
            elif name not in assigned:
                found.append(f"{path.name}:{number}: {name} is not set in a per_call block")
    return found


def test_match_lua_can_be_a_library() -> None:
    assert read_script(str(LUA_DIR), "match").endswith(CALL_LINE)


def test_every_file_level_local_is_a_constant_or_set_per_call() -> None:
    files = [MATCH, *sorted(included_files(MATCH))]
    assert [v for path in files for v in violations(path)] == []


def test_the_check_finds_state_set_at_load(tmp_path: Path) -> None:
    module = tmp_path / "m.lua"
    module.write_text(
        "local LIMIT = 5\n"
        "local count = 0\n"
        "local seen\n"
        "local kept\n"
        "local ns = {SIZE = 1, fired = 0}\n"
        "local spread = {\n  LIMIT = 3,  -- a constant\n  used = false,\n}\n"
        "local fine = {\n  LIMIT = 3,\n  NAMES = {'a', 'b'},\n}\n"
        "per_call(function()\n  seen = {}\n  fine.count = 0\nend)\n"
    )
    assert violations(module) == [
        "m.lua:2: count gets a value at load",
        "m.lua:4: kept is not set in a per_call block",
        "m.lua:5: ns: lowercase field at load",
        "m.lua:6: spread: lowercase field at load",
    ]
