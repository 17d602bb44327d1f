"""Lua scripts assembled from fragments (common/lua.py ``--#include``) and linted as Redis
runs them (common/lua_check.py, ``make lint``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from common import lua_check
from common.lua import SHARED_DIR, assemble, included_files, read_script

REPO_ROOT = Path(__file__).resolve().parents[2]
needs_luacheck = pytest.mark.skipif(
    shutil.which("luacheck") is None, reason="luacheck is not installed (apt-get install lua-check)"
)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_includes_nest_go_in_once_and_keep_their_origins(tmp_path: Path) -> None:
    write(tmp_path / "parts" / "a.lua", "local a = 1\n")
    write(tmp_path / "parts" / "b.lua", "--#include a.lua\nlocal b = a\n")
    script = write(
        tmp_path / "main.lua", "--#include parts/b.lua\n--#include parts/a.lua\nreturn b\n"
    )
    text, origins = assemble(script)
    assert text == "local a = 1\nlocal b = a\nreturn b\n"
    parts = tmp_path / "parts"
    assert origins == [(parts / "a.lua", 1), (parts / "b.lua", 2), (script, 3)]
    assert included_files(script) == {parts / "a.lua", parts / "b.lua"}


def test_a_shared_file_is_found_in_common_lua_from_any_folder(tmp_path: Path) -> None:
    write(tmp_path / "uses_money.lua", "--#include money.lua\nreturn ceil_bps(1, 1)\n")
    text = read_script(str(tmp_path), "uses_money")
    assert text.startswith((SHARED_DIR / "money.lua").read_text())
    settler = REPO_ROOT / "services" / "settler" / "lua" / "apply_ops.lua"
    matcher = REPO_ROOT / "services" / "matcher" / "lua" / "match.lua"
    assert SHARED_DIR / "money.lua" in included_files(settler) & included_files(matcher)


def test_a_missing_include_names_the_file_and_where_it_was_looked_for(tmp_path: Path) -> None:
    script = write(tmp_path / "main.lua", "--#include nowhere.lua\n")
    with pytest.raises(FileNotFoundError, match=r"nowhere\.lua: no such file in"):
        assemble(script)


@needs_luacheck
def test_every_lua_file_of_the_repository_lints_clean() -> None:
    assert lua_check.check(REPO_ROOT) == []


@needs_luacheck
def test_a_fragment_is_judged_by_every_script_that_includes_it(tmp_path: Path) -> None:
    shutil.copy(REPO_ROOT / ".luacheckrc", tmp_path / ".luacheckrc")
    write(
        tmp_path / "lib.lua",
        "local function used_by_one() return 1 end\nlocal function used_by_none() return 2 end\n",
    )
    write(tmp_path / "one.lua", "--#include lib.lua\nreturn used_by_one() + undefined_name\n")
    write(tmp_path / "two.lua", "--#include lib.lua\nreturn 0\n")
    assert lua_check.check(tmp_path) == [
        "lib.lua:2:16: (W211) unused function 'used_by_none'",
        "one.lua:2:24: (W113) accessing undefined variable 'undefined_name'",
    ]
