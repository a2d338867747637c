#!/usr/bin/env bash
# Installs Debian's chromium for the web console's browser test (scripts/console-test.sh), from
# apt: the test drives /usr/bin/chromium, never a browser build downloaded by a driver. A no-op
# when it is there. apt needs root (CI runs as root); another apt run may hold the dpkg lock,
# so each apt step waits for it and is retried.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "setup: /usr/bin/chromium is missing; install it as root: apt-get install chromium" >&2
  exit 1
fi

apt_retry() { # apt_retry ARGS...: apt-get ARGS, up to 10 tries while another apt holds the lock
  local i
  for i in $(seq 1 10); do
    if DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=120 "$@"; then
      return 0
    fi
    echo "setup: apt-get $1 failed (try $i of 10; the dpkg lock may be held), retrying" >&2
    sleep 10
  done
  return 1
}

echo "setup: installing chromium (apt)" >&2
apt_retry -qq update
apt_retry -y -qq install --no-install-recommends chromium > /dev/null
/usr/bin/chromium --version >&2
