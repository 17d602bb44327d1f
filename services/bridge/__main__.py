"""``python -m services.bridge``: the bridge between the vault contract and the exchange.

Runs only with ``DEX_CHAIN_RPC_URL`` set (else it says so and exits 0: no chain, admin
deposits only). One bridge is in charge at a time: it holds ``dex:lease:bridge`` (SET NX PX,
renewed every tick, as the beat's lease); a second one waits until the lease lapses. SIGTERM
stops it between two ticks. A chain that does not answer is retried every poll, logged.
"""

from __future__ import annotations

import logging
import signal
import time
import uuid
from types import FrameType

from common import keys
from common.chain import ChainError, Rpc
from common.healthcheck import touch_heartbeat
from common.markets import load_markets
from common.redis_client import connect, wait_for_redis
from services.bridge.bridge import Bridge
from services.bridge.settings import get_bridge_settings

log = logging.getLogger("bridge")

RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
"""


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = get_bridge_settings()
    if not settings.chain_rpc_url:
        log.info("DEX_CHAIN_RPC_URL is not set: no chain to bridge, exiting")
        return
    client = connect(settings)
    wait_for_redis(client, what="bridge")
    rpc = Rpc(settings.chain_rpc_url)
    bridge = Bridge(settings, client, rpc, load_markets(settings.markets_file))
    while True:  # a node that is not up yet is waited for; a wrong chain or vault is fatal
        try:
            bridge.check_chain()
            break
        except ChainError as exc:
            log.warning("bridge: waiting for the chain node: %s", exc)
            time.sleep(max(settings.bridge_poll_s, 1.0))
    renew = client.register_script(RENEW)
    token = uuid.uuid4().hex
    lease_ms = int(settings.bridge_lease_s * 1000)
    stopping = False

    def stop(signum: int, _: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info(
        "bridge %s following vault %s on chain %d with %d confirmations",
        bridge.address,
        bridge.vault,
        bridge.chain_id,
        bridge.confirmations,
    )
    leader = False
    while not stopping:
        touch_heartbeat()  # liveness: the loop turns (python -m common.healthcheck alive)
        try:
            held = bool(renew(keys=[keys.bridge_lease()], args=[token, lease_ms]))
            if held != leader:
                log.warning("bridge: %s the lease", "took" if held else "lost")
                leader = held
            if held:
                bridge.tick()
        except ChainError as exc:
            log.warning("bridge: the chain did not answer as expected: %s", exc)
        except Exception:
            log.exception("bridge: tick failed; retrying")
        time.sleep(settings.bridge_poll_s)
    if leader:
        client.eval(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end",
            1,
            keys.bridge_lease(),
            token,
        )


if __name__ == "__main__":
    main()
