"""Cancel-replace: one signed action that cancels an open order and places a new one in its
stead, the new one only if the cancel succeeded (docs/api.md "Cancel-replace").

The new order is admitted exactly as an OrderV2 is (orders.submit_order: the same checks,
reservation and account script), its command carrying ``replaces``: the clientOrderId of the
order to cancel. The matcher, in the one call that processes the new order, cancels the old
one (CXL, reason REPLACED) if it is open, and otherwise refuses the new one (REJECTED, reason
REPLACE_FAILED; its done event releases its reservation as for any order). The old order is
looked up under the signer's own account in the same market only.
"""

from __future__ import annotations

from typing import Any

from services.gateway import orders, shapes
from services.gateway.context import Gateway
from services.gateway.errors import ApiError, ErrorCode

FAILED = "REPLACE_FAILED"


def parse_replace(gateway: Gateway, body: dict[str, Any]) -> orders.SignedOrder:
    """A CancelReplace body in the contract's order of checks (``shapes.CANCEL_REPLACE``)."""
    message, sig = shapes.CANCEL_REPLACE.parse_signed(body, gateway.markets)
    return orders.signed_order(gateway, "CancelReplace", message, sig)


async def cancel_replace(gateway: Gateway, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Admit a CancelReplace and wait for the matcher (up to ``orders.WAIT_S``).

    200 ``{"cancelled": <old order>, "order": <new order>}`` when the old order was cancelled
    (the new one then went its own way: resting, filled, expired or rejected by its own
    checks); 202 with both as they stand when the matcher has not answered yet (``cancelled``
    null if the signer has no such order in the market). When the old order was not open,
    the new one is REJECTED (REPLACE_FAILED) and the answer is 404 NOT_FOUND (no such order
    of the signer in the market) or 409 ORDER_CLOSED (it had already finished).
    Anything refused before the matcher (400, 401, 403, 409 DUPLICATE for a used
    clientOrderId, 422, 429, 503) changes nothing, as for an order.
    """
    result = await orders.submit_order(gateway, body, wait=True, parse=parse_replace)
    assert isinstance(result, tuple)
    status, new = result
    assert new is not None
    # The body was parsed whole by submit_order: its names are checked values now.
    user, market, cid = new["userId"], new["market"], new["clientOrderId"]
    old_cid = body["cancelClientOrderId"]
    old = await orders.read_order(gateway, user, old_cid)
    if old is not None and old["market"] != market:
        old = None  # an order of another market is not the one the matcher looked for
    if new["status"] == "REJECTED" and new["reason"] == FAILED:
        outcome = f"so order {cid!r} was REJECTED ({FAILED}) and its reservation released"
        if old is None:
            raise ApiError(
                ErrorCode.NOT_FOUND, f"no order {old_cid!r} of {user} in {market}, {outcome}"
            )
        raise ApiError(
            ErrorCode.ORDER_CLOSED, f"order {old_cid!r} was already {old['status']}, {outcome}"
        )
    return status, {"cancelled": old, "order": new}
