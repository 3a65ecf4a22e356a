#!/usr/bin/env bash
# What the test suite needs beyond the virtualenv: bubblewrap and libseccomp
# (the runner's sandbox, so CI tests the real thing) and a running PostgreSQL
# (the second store backend).  Idempotent; safe to run on every `make test`.
set -euo pipefail

SUDO=""
if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; fi

bash "$(dirname "$0")/sandbox-deps.sh"

# tests/acceptance/test_docs_run.py runs the docs' curl examples, which use jq
if ! command -v jq >/dev/null 2>&1; then
  echo "test-deps: installing jq"
  $SUDO apt-get update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq jq >/dev/null
fi

# tests/dashboard drive a real headless browser: Debian's chromium (Playwright launches it
# with executable_path=/usr/bin/chromium; `playwright install` is never needed)
if ! command -v chromium >/dev/null 2>&1; then
  echo "test-deps: installing chromium"
  $SUDO apt-get update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

pg_up() { python3 - <<'PY'
import socket, sys
s = socket.socket()
s.settimeout(1)
try:
    s.connect(("127.0.0.1", 5432))
except OSError:
    sys.exit(1)
PY
}

if ! pg_up; then
  echo "test-deps: starting PostgreSQL"
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    for v in $(ls /etc/postgresql); do
      $SUDO pg_ctlcluster --skip-systemctl-redirect "$v" main start || true
    done
  fi
  for _ in $(seq 1 30); do pg_up && break; sleep 1; done
  pg_up || { echo "test-deps: PostgreSQL is not reachable on 127.0.0.1:5432" >&2; exit 1; }
fi
echo "test-deps: bubblewrap $(bwrap --version 2>/dev/null | awk '{print $2}'), chromium, PostgreSQL up"
