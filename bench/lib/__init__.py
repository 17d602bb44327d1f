"""The pieces the benchmarks share; every ``bench/<name>.py`` beside this package is an entry point.

The entry points are run by path, ``.venv/bin/python bench/<name>.py`` (docs/performance.md,
``make bench``), so Python puts ``bench/`` first on ``sys.path`` and they import this package
as ``lib``. Importing it puts the repository root (``common``, ``services``) and ``tests/``
(the test suite's launchers, imported as ``support``) at the front of ``sys.path``: the one
place the benchmarks touch it. Nothing outside ``bench/`` imports this package.

- ``cli``: argument parser from a docstring, results written to ``bench/results/``;
- ``traders``: deterministic keys, fast signing, funding over HTTP;
- ``httpload``: the lean HTTP client and the sender processes (open and closed loop);
- ``wsload``: lean WebSocket clients in their own processes (latency, gaps, bytes);
- ``entryload``: a lean client of the gateway's WebSocket order entry (``/v1/ws``);
- ``stream``: the ``stream-200k`` order stream and its one-market configuration;
- ``launch``: the matcher process for one market (on ``support.exchange.Exchange``);
- ``system``: the whole exchange under ``deploy/run.sh``, or one already running;
- ``watch``: trades on the WebSocket, settlement and backlogs, as the exchange reports them;
- ``meter``: CPU, memory and Redis command time of the exchange's processes;
- ``stats``: percentiles and summaries;
- ``ratesearch``: the highest order rate the exchange holds.

Redis servers and processes come from ``tests/support`` (``RedisServer``, ``free_port``,
``Exchange``); only ``tests/support`` is imported from the test tree.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

for _path in (str(REPO_ROOT / "tests"), str(REPO_ROOT)):
    if _path in sys.path:
        sys.path.remove(_path)
    sys.path.insert(0, _path)
