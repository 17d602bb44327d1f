"""Load the Lua scripts kept as ``.lua`` files beside the Python that uses them.

Scripts are registered once per client with ``register_script``: redis-py sends EVALSHA and
falls back to loading the script on NOSCRIPT, also inside a pipeline, and on a cluster.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any


@cache
def read_script(directory: str, name: str) -> str:
    """The text of ``<directory>/<name>.lua``, with ``--#include <file>`` lines expanded."""
    path = Path(directory) / f"{name}.lua"
    lines: list[str] = []
    for line in path.read_text().splitlines():
        if line.startswith("--#include "):
            included = line.removeprefix("--#include ").strip()
            lines.append((Path(directory) / included).read_text())
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


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
