"""Load the Lua scripts kept as ``.lua`` files beside the Python that uses them.

Scripts are registered once per client with ``register_script``: redis-py sends EVALSHA and
falls back to loading the script on NOSCRIPT, also inside a pipeline, and on a cluster.

A script is assembled from smaller files with ``--#include <file>`` lines: the named file is
looked up beside the file that includes it, then beside the script, then in ``common/lua/``
(the Lua shared by every service, e.g. ``money.lua``). Includes nest, and a file goes in once,
where it is first included, so a module may name what it needs without repeating it. The
parts are fragments of one chunk: their file-level ``local``s are visible to what follows.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

SHARED_DIR = Path(__file__).resolve().parent / "lua"
"""Lua files shared by the scripts of every service."""
INCLUDE = "--#include "


class Assembled(NamedTuple):
    """A script's text and, for each of its lines, the file and line number it came from."""

    text: str
    origins: list[tuple[Path, int]]


def assemble(path: Path) -> Assembled:
    """The script at ``path`` with its ``--#include`` lines expanded (see the module doc)."""
    path = path.resolve()
    lines: list[str] = []
    origins: list[tuple[Path, int]] = []
    seen = {path}

    def expand(file: Path) -> None:
        for number, line in enumerate(file.read_text().splitlines(), start=1):
            if not line.startswith(INCLUDE):
                lines.append(line)
                origins.append((file, number))
                continue
            included = locate(line.removeprefix(INCLUDE).strip(), file.parent, path.parent)
            if included not in seen:
                seen.add(included)
                expand(included)

    expand(path)
    return Assembled("\n".join(lines) + "\n", origins)


def locate(name: str, *directories: Path) -> Path:
    """The included file ``name``: beside the includer, beside the script, or shared."""
    for directory in (*directories, SHARED_DIR):
        candidate = directory / name
        if candidate.is_file():
            return candidate.resolve()
    searched = ", ".join(str(d) for d in (*directories, SHARED_DIR))
    raise FileNotFoundError(f"--#include {name}: no such file in {searched}")


def included_files(path: Path) -> set[Path]:
    """Every file the script at ``path`` includes, directly or through another include."""
    return {origin for origin, _ in assemble(path).origins} - {path.resolve()}


@cache
def read_script(directory: str, name: str) -> str:
    """The text of ``<directory>/<name>.lua``, with ``--#include <file>`` lines expanded."""
    return assemble(Path(directory) / f"{name}.lua").text


class ScriptSet:
    """Every script of one ``lua/`` folder, registered on one client, by file stem.

    >>> scripts = ScriptSet(client, Path(__file__).parent / "lua")
    >>> scripts["match"](keys=[...], args=[...])
    """

    def __init__(self, client: Any, directory: Path) -> None:
        self._client = client
        self._directory = str(directory)
        self._scripts: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        script = self._scripts.get(name)
        if script is None:
            script = self._client.register_script(read_script(self._directory, name))
            self._scripts[name] = script
        return script
