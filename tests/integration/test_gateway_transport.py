"""The gateway's transport: a group runs in order in one round trip, and a script Redis has
forgotten (NOSCRIPT, as after a restart) is loaded and only the commands that answered NOSCRIPT
are sent again."""

from __future__ import annotations

import asyncio

import pytest
import redis

from common.redis_client import connect_async
from common.settings import DexSettings
from services.gateway.transport import Commands, Transport

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("url_kind", ["lane", "redis-py"])
def test_a_forgotten_script_is_loaded_and_only_its_command_is_sent_again(
    redis_url: str, r: redis.Redis, url_kind: str
) -> None:
    settings = DexSettings(redis_url=redis_url)
    if url_kind == "lane":
        transport = Transport.connect(settings)  # a plain redis:// URL: the lean lane
    else:
        transport = Transport(connect_async(settings), connect_async(settings), cluster=False)
    script = transport.scripts["rate_limit"]

    async def scenario() -> list[object]:
        try:
            r.script_flush()
            group = (
                Commands()
                .xadd("dex:test:stream", {"c": "1"})
                .script(script, ["dex:test:bucket"], [10, 20])
            )
            return await transport.execute(group)
        finally:
            await transport.close()

    replies = asyncio.run(scenario())
    assert replies[1] == 0 and r.hlen("dex:test:bucket") == 2
    assert r.xlen("dex:test:stream") == 1  # the XADD before the script ran once
    assert r.script_exists(script.sha) == [True]


def test_concurrent_groups_keep_their_own_replies(redis_url: str) -> None:
    transport = Transport.connect(DexSettings(redis_url=redis_url))

    async def scenario() -> list[list[object]]:
        try:
            groups = [
                Commands().sadd(f"dex:test:set:{i}", *range(i)).zcard(f"dex:test:none:{i}")
                for i in range(1, 40)
            ]
            return list(await asyncio.gather(*(transport.execute(g) for g in groups)))
        finally:
            await transport.close()

    assert asyncio.run(scenario()) == [[i, 0] for i in range(1, 40)]
