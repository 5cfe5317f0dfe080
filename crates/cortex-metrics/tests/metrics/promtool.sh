#!/usr/bin/env bash
# Check a Prometheus text exposition read from stdin with `promtool check metrics`,
# installing Debian's `prometheus` package (which ships promtool) first when promtool
# is missing. Exits non-zero, saying why, when promtool cannot be had: the test that
# calls this must fail, not skip. Every step is bounded by `timeout`.
set -euo pipefail

if ! command -v promtool >/dev/null; then
  command -v apt-get >/dev/null || { echo "promtool is missing and apt-get is not available: install prometheus (promtool) by hand" >&2; exit 2; }
  [ "$(id -u)" = 0 ] || { echo "promtool is missing: run as root to install it, or install prometheus (promtool) by hand" >&2; exit 2; }
  echo "installing promtool (apt-get install prometheus)" >&2
  # The package's own service must not start: policy-rc.d 101 forbids it.
  made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made_policy=1
  fi
  rc=0
  {
    DEBIAN_FRONTEND=noninteractive timeout 300 apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq --no-install-recommends prometheus
  } >&2 || rc=$?
  [ $made_policy = 1 ] && rm -f /usr/sbin/policy-rc.d
  [ $rc = 0 ] || { echo "apt-get install prometheus failed ($rc)" >&2; exit 2; }
  command -v promtool >/dev/null || { echo "promtool still missing after installing prometheus" >&2; exit 2; }
fi

exec timeout 120 promtool check metrics
