"""Every code block of README.md and clients/*/README.md is run by a test (issue 18): each is
named here, by its first line, with the test that runs it as a reader would. A new block fails
this test until a test runs it and it is added here."""

from __future__ import annotations

import re

from support.exchange import REPO_ROOT

TOUR = "tests/clients/test_python_examples.py::test_the_readme_tour_runs"
RUN_BY = {
    ("README.md", "make run    # a local Redis"): [
        "tests/integration/test_make_run.py::test_run_starts_everything_and_ctrl_c_stops_it_and_its_redis",
        "Makefile::test:",  # `make test` is the suite these tests are
    ],
    ("README.md", "DEX_ADMIN_TOKEN=secret make run"): [
        "tests/integration/test_make_run.py::test_run_starts_everything_and_ctrl_c_stops_it_and_its_redis",
        'tests/clients/test_python_examples.py::TOKEN = "secret"',  # the examples' exchange
    ],
    ("README.md", "curl -s localhost:8000/v1/health"): [
        "tests/clients/test_python_examples.py::test_the_readme_curl_block_sees_a_healthy_empty_exchange",
    ],
    ("README.md", "import os, time"): [TOUR],
    ("README.md", "import asyncio, os"): [TOUR],  # the tour runs the Python blocks as one
    ("README.md", "export DEX_ADMIN_TOKEN=secret"): [TOUR],
    ("README.md", "VAULT=$(python3 -c"): [
        "tests/integration/test_bridge.py::test_the_readmes_deposit_from_a_wallet_is_credited_as_it_shows",
    ],
    ("README.md", "client --HTTP--> gateway"): [],  # a diagram, not code
    ("clients/python/README.md", "pip install -e clients/python"): [
        "Makefile::pip install -q -e clients/python",  # `make setup`, before any test
    ],
    ("clients/ts/README.md", 'import { Wallet } from "ethers";'): [
        "tests/clients/test_python_examples.py::test_the_typescript_readme_example_places_cancels_and_rests",
    ],
}


def code_blocks() -> set[tuple[str, str]]:
    """(README, first line) of each fenced block."""
    readmes = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "clients").glob("*/README.md"))]
    found = set()
    for path in readmes:
        for block in re.findall(r"^```[a-z]*\n(.*?)^```", path.read_text(), flags=re.S | re.M):
            found.add((str(path.relative_to(REPO_ROOT)), block.split("\n", 1)[0].strip()))
    return found


def named(block: tuple[str, str]) -> bool:
    readme, first_line = block
    return any(r == readme and first_line.startswith(start) for r, start in RUN_BY)


def test_every_readme_code_block_is_run_by_a_named_test() -> None:
    blocks = code_blocks()
    unrun = {block for block in blocks if not named(block)}
    assert not unrun, f"README code blocks no test runs (run them in a test, name it here): {unrun}"
    gone = {(r, s) for r, s in RUN_BY if not any(b == r and f.startswith(s) for b, f in blocks)}
    assert not gone, f"named here but no longer in the READMEs: {gone}"


def test_the_tests_named_exist() -> None:
    for runners in RUN_BY.values():
        for runner in runners:
            path, name = runner.split("::", 1)
            assert name in (REPO_ROOT / path).read_text(), runner
