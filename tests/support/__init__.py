"""Shared helpers for the test suite (importable as ``support`` from any test).

``tests/conftest.py`` puts ``tests/`` on ``sys.path``, so a test does
``from support.redis_server import RedisServer, free_port, redis_ping``.
"""
