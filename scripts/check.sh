#!/usr/bin/env bash
# Static checks: ruff (lint, then the format check) and mypy on the packages [tool.mypy] names.
# Runs them all, then fails if any failed. Needs the .venv that scripts/setup.sh makes.
set -uo pipefail
cd "$(dirname "$0")/.."

failed=()
.venv/bin/ruff check . || failed+=("ruff check")
.venv/bin/ruff format --check . || failed+=("ruff format --check")
.venv/bin/mypy || failed+=("mypy")
if [ ${#failed[@]} -gt 0 ]; then
  echo "check: failed: $(IFS=,; echo "${failed[*]}")" >&2
  exit 1
fi
echo "check: ruff and mypy passed" >&2
