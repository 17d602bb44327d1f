"""The web page (clients/web) in Debian's Chromium driven by Playwright, against the real
processes on a real redis-server: an order placed through the form shows in the depth ladder
and open orders and is cancelled; the operator view halts and resumes a market. The node
test prints the paths of its screenshots."""

from __future__ import annotations

import shutil
import tempfile

import pytest
from npm_support import exchange_env, require_npm_package, run_npm
from support.exchange import Exchange

pytestmark = pytest.mark.integration


def test_web_page_in_chromium(redis_url: str) -> None:
    package = require_npm_package("web")
    if not (package / "dist" / "index.html").is_file():
        pytest.fail(f"{package}/dist is missing: run `make setup` (it builds the page with npm)")
    browser = shutil.which("chromium")
    if browser is None:
        pytest.fail(
            "chromium is not installed: `make setup` installs it (apt-get install chromium)"
        )
    shots = tempfile.mkdtemp(prefix="dex-web-")
    with Exchange(redis_url) as exchange:
        exchange.start("gateway", "matcher", "settler", "broadcaster")
        env = {**exchange_env(exchange), "DEX_CHROMIUM": browser, "DEX_SCREENSHOT_DIR": shots}
        output = run_npm(package, "test", env, timeout=180)
    assert "# fail 0" in output
    assert f"screenshot: {shots}/web-page.png" in output
