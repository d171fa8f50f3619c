#!/usr/bin/env bash
# Creates .venv and installs the project with its test tools. Idempotent: reinstalls only
# when pyproject.toml changed since the last successful run.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for candidate in python3.11 python3.12 python3.13 python3; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      PY=$candidate; break
    fi
  done
fi
[ -n "$PY" ] || { echo "setup: Python 3.11 or newer is needed" >&2; exit 1; }

stamp=.venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)
if [ -f "$stamp" ]; then exit 0; fi
echo "setup: installing into .venv (once) ..." >&2
if ! "$PY" -m venv .venv 2>/dev/null; then
  apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'
rm -f .venv/.installed-*
touch "$stamp"
