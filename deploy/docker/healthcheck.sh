#!/usr/bin/env bash
# Container health check: GET a path (default /health/live) from the worker's
# metrics/health server on this host and succeed only on HTTP 200. Plain bash
# (/dev/tcp), so the runtime image needs no curl.
#
#   pythia-healthcheck [PATH]
#
# The port comes from PYTHIA_HEALTHCHECK_ADDRESS, else PYTHIA_METRICS__ADDRESS
# (the worker's `metrics.address`), else 9100.
set -euo pipefail
path="${1:-/health/live}"
address="${PYTHIA_HEALTHCHECK_ADDRESS:-${PYTHIA_METRICS__ADDRESS:-0.0.0.0:9100}}"
port="${address##*:}"
exec 3<>"/dev/tcp/127.0.0.1/${port}"
printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$path" >&3
read -r -t 5 _ status _ <&3
exec 3<&-
[ "$status" = "200" ]
