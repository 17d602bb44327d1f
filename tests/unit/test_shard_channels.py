"""Shard channel names (keys.shard_*) and the Redis version check of common/pubsub.py."""

from __future__ import annotations

import fakeredis
from redis.crc import key_slot

from common import keys, pubsub

MARKETS = ["BTC-USDC", "BTC-PERP"]
USER = "0x" + "ab" * 20


def test_market_and_account_topics_carry_the_tag_of_their_slot() -> None:
    assert keys.shard_publish_channel("depth:BTC-USDC") == "dex:ch:{BTC-USDC}:depth:BTC-USDC"
    assert keys.shard_publish_channel("trade:BTC-USDC") == "dex:ch:{BTC-USDC}:trade:BTC-USDC"
    assert keys.shard_publish_channel("ticker:BTC-PERP") == "dex:ch:{BTC-PERP}:ticker:BTC-PERP"
    assert keys.shard_publish_channel(f"acct:{USER}") == f"dex:ch:{{{USER}}}:acct:{USER}"
    assert keys.shard_channel_prefix("BTC-USDC") == "dex:ch:{BTC-USDC}:"


def test_an_orders_topic_is_one_shard_channel_per_market() -> None:
    channels = keys.shard_channels(f"orders:{USER}", MARKETS)
    assert channels == [f"dex:ch:{{{m}}}:orders:{USER}" for m in MARKETS]
    assert all(keys.shard_channel_topic(c) == f"orders:{USER}" for c in channels)
    assert keys.shard_channels("depth:BTC-USDC", MARKETS) == ["dex:ch:{BTC-USDC}:depth:BTC-USDC"]


def test_shard_channels_hash_to_the_slot_of_their_tag() -> None:
    assert key_slot(keys.shard_publish_channel("depth:BTC-USDC").encode()) == key_slot(
        keys.market_state("BTC-USDC").encode()
    )
    assert key_slot(keys.shard_publish_channel(f"acct:{USER}").encode()) == key_slot(
        keys.balances(USER).encode()
    )


def test_sharded_pub_sub_needs_redis_7_on_every_node() -> None:
    assert pubsub._decide(["7.0.15", "7.2.4"])
    assert not pubsub._decide(["7.0.15", "6.2.14"])
    assert not pubsub._decide([])
    info = {"n1": {"redis_version": "7.0.0"}, "n2": {"redis_version": "8.0.1"}}
    assert pubsub._versions(info) == ["7.0.0", "8.0.1"]
    assert pubsub._versions({"redis_version": "6.0.9"}) == ["6.0.9"]


def test_a_single_redis_publishes_classic() -> None:
    client = fakeredis.FakeRedis(decode_responses=True)
    listener = client.pubsub()
    listener.subscribe(keys.channel("ticker:BTC-USDC"))
    listener.get_message(timeout=1)
    assert not pubsub.sharded(client)
    pubsub.publish(client, "ticker:BTC-USDC", '{"seq":1}')
    message = listener.get_message(timeout=1)
    assert message is not None and message["data"] == '{"seq":1}'
