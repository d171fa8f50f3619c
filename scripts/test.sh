#!/usr/bin/env bash
# The default test run (set-up and the static checks included). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/check.sh
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
