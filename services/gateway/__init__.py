"""The gateway: the only door for writes, and the door for reads (DESIGN.md).

Its modules form layers; each imports only layers below it (never the module that imports it):

1. Transport — ``transport.py`` (over ``lane.py``, the lean RESP connection): the one way to
   Redis, command groups, scripts and the one place that reloads a script on NOSCRIPT.
2. ``context.py`` — :class:`~services.gateway.context.Gateway`, the typed dependencies every
   handler gets (settings, markets, verifier, transport) and brief caches of market status,
   backlog, prices and Redis's memory figure.
3. Domain — ``funds``, ``ratelimit``, ``signed``, ``orders`` (admission), ``cancels``,
   ``withdrawals``, ``accounts``, ``market_data``, ``admin``, ``agents``, ``batches`` (signed
   batches), ``deadman`` (the
   dead-man's switch and the loop that fires it): the work, in the contract's order of checks.
   ``errors.ApiError`` and the body checks of ``parsing`` sit beside the transport.
4. ``outbox.py`` — the sweeper that delivers what an admission reserved but never sent.
5. HTTP — ``writes`` (the shared path of signed writes), ``middleware``, ``deps``, ``app``
   (routes and lifespan), with ``schemas``, ``metrics`` and ``logs``.
"""
