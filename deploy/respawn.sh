#!/usr/bin/env bash
# deploy/respawn.sh CMD [ARG...] — run CMD, and start it again (after 1 s) whenever it exits on
# its own; SIGTERM / SIGINT stop it and this script, which then exits with CMD's status.
#
# The Procfile runs Celery's worker and beat under it: Celery's Redis transport ends the worker
# when the broker connection drops (e.g. Redis restarts), and honcho would then stop every
# process of `make run`. Kubernetes and compose restart them themselves (docs/operations.md).

set -u
stopping=0
child=0
on_signal() {
    stopping=1
    (( child > 0 )) && kill -TERM "$child" 2>/dev/null
}
trap on_signal TERM INT

while :; do
    "$@" &
    child=$!
    status=0
    wait "$child" || status=$?
    # a trapped signal ends `wait` early: wait on until the child itself is gone
    while kill -0 "$child" 2>/dev/null; do
        wait "$child"
        status=$?
    done
    (( stopping )) && exit "$status"
    printf '[respawn] %s exited with status %s; starting it again in 1 s\n' "$1" "$status" >&2
    sleep 1 &
    wait $! 2>/dev/null
    (( stopping )) && exit "$status"
done
