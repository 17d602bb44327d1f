"""The broadcaster's own knobs, on top of the shared ``DEX_*`` settings."""

from __future__ import annotations

from common.settings import DexSettings


class BroadcasterSettings(DexSettings):
    """``DEX_BROADCASTER_*`` limits: queue bound, heartbeat, idle timeout, subscriptions,
    connections per address (docs/api.md "WebSocket limits")."""

    # Messages a client may have waiting; one more and it is closed with 1013.
    broadcaster_send_queue: int = 1000
    # Queued frames are written this long after the first one arrives (0: on the next turn of
    # the event loop); unset: 20 µs per connection waiting, at most 20 ms, so many clients
    # share each write pass and a few are written to at once.
    broadcaster_flush_interval_ms: float | None = None
    # Protocol-level ping every interval; no pong within the timeout drops the connection.
    broadcaster_ping_interval_s: float = 20.0
    broadcaster_ping_timeout_s: float = 20.0
    # A connection that subscribes to nothing and says nothing this long is closed.
    broadcaster_idle_timeout_s: float = 300.0
    # Topics one connection may hold; one more is the error TOO_MANY_SUBSCRIPTIONS (API.md §1).
    broadcaster_max_subscriptions: int = 100
    # Connections one client address may hold open at once in this process; one more is closed
    # at once with 1008 (0: no bound). Hyperliquid allowed 100 per IP; many users can share
    # an address (NAT), and 100 connections × 100 topics is ample for one market maker.
    broadcaster_max_connections_per_ip: int = 100
    # Largest client message accepted (bytes); client messages are small JSON commands.
    broadcaster_max_message_bytes: int = 65536


def broadcaster_settings(base: DexSettings | None = None) -> BroadcasterSettings:
    """The broadcaster settings: ``base``'s shared values, the rest from the environment."""
    if base is None or isinstance(base, BroadcasterSettings):
        return base or BroadcasterSettings()
    return BroadcasterSettings(**base.model_dump())
