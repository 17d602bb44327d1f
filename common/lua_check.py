"""Lint every Lua file of the repository with luacheck (``make lint``).

A script is linted as Redis runs it: assembled from its ``--#include`` fragments
(:mod:`common.lua`), one chunk. Each warning names the file and line it came from. A fragment
is shared by several scripts, so a warning that it declares something unused counts only when
every script that includes it leaves that thing unused (a shared money rule one script does
not call is not dead code). Configuration: ``.luacheckrc`` at the repository's root.

    python -m common.lua_check            # exit status 1 when luacheck reports anything
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from common.lua import assemble, included_files

ROOT = Path(__file__).resolve().parent.parent
SKIPPED_DIRS = {".git", ".venv", "var", "node_modules", "__pycache__"}
_WARNING = re.compile(r"^[^:]*:(\d+):(\d+): \((\w\d+)\) (.*)$")
_ON_LINE = re.compile(r"on line (\d+)")
Warning = tuple[Path, int, int, str, str]  # file, line, column, code, message


def lua_files(root: Path = ROOT) -> list[Path]:
    """Every ``.lua`` file under ``root``, outside tool and build folders."""
    return sorted(
        path.resolve()
        for path in root.rglob("*.lua")
        if not SKIPPED_DIRS.intersection(path.relative_to(root).parts)
    )


def scripts_and_fragments(files: list[Path]) -> tuple[list[Path], dict[Path, list[Path]]]:
    """The scripts (files no other file includes) and, per fragment, the scripts including it."""
    included = {path: included_files(path) for path in files}
    fragments = set().union(*included.values())
    scripts = [path for path in files if path not in fragments]
    users: dict[Path, list[Path]] = defaultdict(list)
    for script in scripts:
        for fragment in included[script]:
            users[fragment].append(script)
    return scripts, users


def check_script(script: Path, root: Path = ROOT) -> list[Warning]:
    """luacheck's warnings on the assembled script, at their files' own lines."""
    text, origins = assemble(script)
    result = subprocess.run(
        ["luacheck", "--config", str(root / ".luacheckrc"), "--formatter", "plain", "--codes",
         "--no-color", "--filename", str(script), "-"],
        input=text, capture_output=True, text=True, check=False, cwd=root,
    )  # fmt: skip
    if result.returncode > 1:
        raise RuntimeError(f"luacheck failed on {script}: {result.stderr or result.stdout}")

    def where(line: int) -> str:
        path, number = origins[line - 1]
        return f"{path.relative_to(root)}:{number}"

    warnings: list[Warning] = []
    for output in result.stdout.splitlines():
        match = _WARNING.match(output)
        if match is None:
            continue
        line, column, code, message = match.groups()
        path, number = origins[int(line) - 1]
        message = _ON_LINE.sub(lambda m: f"on {where(int(m.group(1)))}", message)
        warnings.append((path, number, int(column), code, message))
    return warnings


def check(root: Path = ROOT) -> list[str]:
    """Every warning of every Lua file under ``root``, as ``file:line:column: (code) text``."""
    scripts, users = scripts_and_fragments(lua_files(root))
    found: dict[Warning, set[Path]] = defaultdict(set)
    for script in scripts:
        for warning in check_script(script, root):
            found[warning].add(script)
    reported = []
    for warning, where in found.items():
        path, line, column, code, message = warning
        unused = code.startswith("W2")
        if path in users and unused and where != set(users[path]):
            continue  # unused by some scripts only: used by another that includes it
        reported.append(f"{path.relative_to(root)}:{line}:{column}: ({code}) {message}")
    return sorted(set(reported))


def main() -> int:
    if shutil.which("luacheck") is None:
        print("error: luacheck is not installed (Debian: apt-get install lua-check)")
        return 2
    reported = check()
    for line in reported:
        print(line)
    return 1 if reported else 0


if __name__ == "__main__":
    sys.exit(main())
