"""The command line of a benchmark: its parser, and where its results go."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from lib import REPO_ROOT

RESULTS_DIR = REPO_ROOT / "bench" / "results"


def parser(doc: str | None, *, full: bool = False) -> argparse.ArgumentParser:
    """A parser described by the module docstring: its first paragraph, or all of it."""
    text = doc or ""
    if full:
        return argparse.ArgumentParser(
            description=text, formatter_class=argparse.RawDescriptionHelpFormatter
        )
    return argparse.ArgumentParser(description=text.split("\n\n")[0])


def write_results(name: str, result: dict[str, Any]) -> Path:
    """Write ``result`` as indented JSON to ``bench/results/<name>``; its path."""
    path = RESULTS_DIR / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path
