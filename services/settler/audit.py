"""``python -m services.settler.audit``: print the auditor's report; exit 1 when broken.

The same :func:`common.audit.audit` answers ``GET /v1/admin/audit``.
"""

from __future__ import annotations

import sys

import orjson

from common.audit import audit
from common.chain import configured
from common.markets import load_markets
from common.redis_client import connect, wait_for_redis
from common.settings import get_settings


def main() -> int:
    settings = get_settings()
    client = connect(settings)
    wait_for_redis(client, timeout_s=10, what="audit")
    chain = configured(settings.chain_rpc_url)  # the vault's holdings, when a chain is set
    report = audit(client, load_markets(settings.markets_file), chain, settings.verifying_contract)
    sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    if not report["ok"]:
        broken = [name for name, check in report["invariants"].items() if not check["ok"]]
        sys.stderr.write(f"audit: broken invariants: {', '.join(broken)}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
