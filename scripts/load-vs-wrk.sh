#!/usr/bin/env bash
# Kept for old links: the comparison now runs wrk, oha and cortex-load together.
exec "$(dirname "$0")/load-vs-peers.sh" "$@"
