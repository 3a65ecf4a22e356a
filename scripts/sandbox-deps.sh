#!/usr/bin/env bash
# What the runner's sandbox needs from the system: bubblewrap and libseccomp.
# Idempotent; `make run` and `make test` both call it, so a fresh machine gets a
# sandboxed platform without a manual step (sequence up refuses to run
# strategies without bubblewrap unless told --unsandboxed).
set -euo pipefail

SUDO=""
if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; fi

need=""
command -v bwrap >/dev/null 2>&1 || need="$need bubblewrap"
# the runner builds its seccomp filter with libseccomp (through ctypes)
ldconfig -p 2>/dev/null | grep -q 'libseccomp\.so\.2' || need="$need libseccomp2"
if [ -n "$need" ]; then
  echo "sandbox-deps: installing$need"
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "sandbox-deps: no apt-get here: install$need with your package manager" >&2
    exit 1
  fi
  $SUDO apt-get update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $need >/dev/null
fi
