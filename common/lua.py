"""Load the Lua scripts kept as ``.lua`` files beside the Python that uses them.

Scripts are registered once per client with ``register_script``: redis-py sends EVALSHA and
falls back to loading the script on NOSCRIPT, also inside a pipeline, and on a cluster.

A script is assembled from smaller files with ``--#include <file>`` lines: the named file is
looked up beside the file that includes it, then beside the script, then in ``common/lua/``
(the Lua shared by every service, e.g. ``money.lua``). Includes nest, and a file goes in once,
where it is first included, so a module may name what it needs without repeating it. The
parts are fragments of one chunk: their file-level ``local``s are visible to what follows.

A script whose last line is ``return main(KEYS, ARGV)`` can also be kept by Redis as a function
library (:class:`Library`): its top level runs once, at ``FUNCTION LOAD``, instead of on every
call, and each call runs ``main`` alone. Such a script must start every call from the same
state itself (match.lua's ``per_call``), since the library's locals outlive a call.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

from redis.exceptions import NoPermissionError, NoScriptError, ResponseError

SHARED_DIR = Path(__file__).resolve().parent / "lua"
"""Lua files shared by the scripts of every service."""
INCLUDE = "--#include "
CALL_LINE = "return main(KEYS, ARGV)\n"
"""The last line of a script that can be loaded as a function library (see the module doc)."""
Execute = Callable[..., Any]
"""Sends one command (its arguments) and returns its reply, raising error replies."""


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


def evalsha(script: Any, execute: Execute, keys: Sequence[Any], args: Sequence[Any]) -> Any:
    """Run redis-py's registered ``script`` (its ``sha`` and text) through ``execute``, loading
    it first if Redis does not know it (restarted or flushed)."""
    try:
        return execute("EVALSHA", script.sha, len(keys), *keys, *args)
    except NoScriptError:
        script.sha = execute("SCRIPT", "LOAD", script.script)
        return execute("EVALSHA", script.sha, len(keys), *keys, *args)


class Library:
    """A script Redis keeps as a function library (``FUNCTION LOAD``, Redis 7.0 and later).

    A plain script's chunk runs whole on every call: for match.lua that is creating ~140
    closures of its modules' functions each time, ~336,000 of the ~497,000 instructions of a
    call that applies nothing (docs/performance.md). As a library the chunk runs once, at
    load, and ``FCALL`` runs its ``main`` alone. The library and its function are named after
    the script's text (``dex_<name>_<sha1 prefix>``), so a changed script is a new library
    and two builds running side by side never replace each other's; a Redis that lost it
    (restarted without persistence, a new cluster node) gets it again on ``Function not
    found``, with ``REPLACE`` (the same text: a cluster loads it on every primary, and those
    that have it already keep the same). A Redis without functions (older than 7.0, or a user
    without the right) runs the plain script by EVALSHA instead.

    The function is flagged ``allow-oom``: past ``maxmemory`` it runs as the plain script did
    (Redis lets a script's reads and its first ``XREADGROUP`` through at the limit, and a
    script that has written may go on), so what the gateway accepted before its high-water
    mark is still matched, and cancels still apply.

    Called like redis-py's ``Script``, ``library(keys=[...], args=[...])``, but not inside a
    pipeline (its reload needs the reply). Libraries of older texts stay until deleted
    (docs/operations.md "Redis persistence").
    """

    def __init__(self, client: Any, name: str, text: str) -> None:
        if not text.endswith(CALL_LINE):
            raise ValueError(f"{name}.lua does not end with {CALL_LINE.strip()!r}")
        self._client = client
        self.function = f"dex_{name}_{hashlib.sha1(text.encode()).hexdigest()[:16]}"
        self.code = (
            f"#!lua name={self.function}\n{text.removesuffix(CALL_LINE)}"
            f"redis.register_function{{function_name = '{self.function}', callback = main,"
            " flags = {'allow-oom'}}\n"
        )
        self.script = client.register_script(text)
        self.functions = True
        """False once Redis refused to load a library: plain script calls from then on."""

    def __call__(
        self, keys: Sequence[Any] = (), args: Sequence[Any] = (), client: Any = None
    ) -> Any:
        client = self._client if client is None else client
        if not self.functions:
            return self.script(keys=keys, args=args, client=client)
        return self.run(client.execute_command, keys, args)

    def run(self, execute: Execute, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """One call through ``execute``; the library loaded first where Redis lacks it."""
        if self.functions:
            command = ("FCALL", self.function, len(keys), *keys, *args)
            try:
                return execute(*command)
            except NoPermissionError:
                self.functions = False
            except ResponseError as error:
                if _unknown_command(error):
                    self.functions = False
                elif "Function not found" not in str(error):
                    raise
                elif self._load(execute):
                    return execute(*command)
        return evalsha(self.script, execute, keys, args)

    def _load(self, execute: Execute) -> bool:
        try:
            execute("FUNCTION", "LOAD", "REPLACE", self.code)
        except NoPermissionError:
            self.functions = False
        except ResponseError as error:
            if not _unknown_command(error):
                raise
            self.functions = False
        return self.functions


def _unknown_command(error: ResponseError) -> bool:
    """Redis has no such command (older than 7.0, or the command renamed away)."""
    return "unknown command" in str(error).lower()


class ScriptSet:
    """Every script of one ``lua/`` folder, registered on one client, by file stem; a script
    that can be a function library (ends with ``CALL_LINE``) is a :class:`Library`.

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
            text = read_script(self._directory, name)
            if text.endswith(CALL_LINE):
                script = Library(self._client, name, text)
            else:
                script = self._client.register_script(text)
            self._scripts[name] = script
        return script
