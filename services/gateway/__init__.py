"""The gateway: the only door for writes, and the door for reads (DESIGN.md).

Its modules form layers; each imports only layers below it (never the module that imports it):

1. Transport — ``transport.py`` (over ``lane.py``, the lean RESP connection): the one way to
   Redis, command groups, scripts and the one place that reloads a script on NOSCRIPT.
2. ``context.py`` — :class:`~services.gateway.context.Gateway`, the typed dependencies every
   handler gets (settings, markets, verifier, transport) and brief caches of market status,
   backlog, prices and Redis's memory figure. Above it ``sessions``: the WebSocket entry's
   cancel-on-disconnect sessions, renewed by the entry and fired by the dead-man's switch loop
   when their gateway is gone.
3. Domain — ``funds``, ``ratelimit``, ``signed``, ``orders`` (admission), ``cancels``,
   ``withdrawals``, ``accounts``, ``market_data``, ``admin``, ``agents``, ``deadman`` (the
   dead-man's switch and the loop that fires it), ``leverage`` (an account's initial margin per
   market), ``twap`` (TWAP orders: their slices through ``orders``' admission, and the loop
   that fires them), ``amends`` (amends that keep priority): the work, in the contract's
   order of checks. ``replaces`` (cancel-replace) and ``batches`` (signed batches) sit above
   them: the one admits its new order through ``orders``, the other its actions through
   ``orders`` and ``amends``.
   ``errors.ApiError`` and the body checks of ``parsing`` sit beside the transport.
4. ``outbox.py`` — the sweeper that delivers what an admission reserved but never sent.
5. HTTP — ``writes`` (the shared path of signed writes), ``middleware``, ``deps``, ``app``
   (routes and lifespan), with ``schemas``, ``metrics`` and ``logs``; ``wsentry`` (the
   WebSocket order entry, ``GET /v1/ws``: the same writes, each op one line of ``OPS``);
   ``server``, the HTTP protocol ``__main__`` serves them with (uvicorn's, each answer in one
   write), which imports nothing of the gateway.
"""
