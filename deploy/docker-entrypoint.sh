#!/bin/sh
# Run one of the six OrderBookDEX processes by name; anything else is run as given.
set -eu
process="${1:-gateway}"
[ "$#" -gt 0 ] && shift
case "$process" in
  gateway)     exec python -m services.gateway "$@" ;;
  matcher)     exec python -m services.matcher "$@" ;;
  broadcaster) exec python -m services.broadcaster "$@" ;;
  bridge)      exec python -m services.bridge "$@" ;;
  # Without -Q the worker takes every queue (settle, periodic, celery); pass `-Q settle` or
  # `-Q periodic` after `settler` to run a worker for one of them.
  settler)     exec celery -A services.settler worker --loglevel=INFO \
                 --without-gossip --without-mingle "$@" ;;
  beat)        exec celery -A services.settler beat --loglevel=INFO \
                 -s /tmp/celerybeat-schedule "$@" ;;
  *)           exec "$process" "$@" ;;
esac
