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

# System packages the local nodes and the tests use: OpenMPI for the MPI toolkits (mpirun, mpicc); a container
# runtime for containerSettings, and busybox-static, from which the container tests build an image.
need=()
command -v mpirun >/dev/null 2>&1 || need+=(openmpi-bin libopenmpi-dev)
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
[ -x /bin/busybox ] || need+=(busybox-static)
# a headless browser and its WebDriver for the dashboard's tests (tests/integration/test_dashboard.py)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing ${need[*]} (apt, once) ..." >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "setup: warning: ${need[*]} missing and cannot be installed here (not root or no apt)" >&2
  fi
fi

# Local stand-ins for Azure services, for the adapter tests: Azurite (blob) and cosmosdb-server.
if [ ! -x .stand-ins/node_modules/.bin/azurite-blob ] || [ ! -f .stand-ins/node_modules/@vercel/cosmosdb-server/lib/cli.js ]; then
  if command -v npm >/dev/null 2>&1; then
    echo "setup: installing azurite and @vercel/cosmosdb-server into .stand-ins (npm, once) ..." >&2
    mkdir -p .stand-ins
    npm install --prefix .stand-ins --no-audit --no-fund --loglevel=error azurite@3 @vercel/cosmosdb-server@1 >/dev/null
  else
    echo "setup: warning: npm missing: the Azurite and Cosmos adapter tests will be skipped" >&2
  fi
fi

stamp=.venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)
if [ -f "$stamp" ]; then exit 0; fi
echo "setup: installing into .venv (once) ..." >&2
if ! "$PY" -m venv .venv 2>/dev/null; then
  apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'
# the Functions worker's library (for the test that indexes the packaged app) declares Python 3.13;
# its indexing code runs on older ones, where pip would refuse it
.venv/bin/python -c 'import sys; sys.exit(sys.version_info >= (3, 13))' &&
  .venv/bin/python -m pip install -q --no-deps --ignore-requires-python azure-functions-runtime==1.3.0
rm -f .venv/.installed-*
touch "$stamp"
