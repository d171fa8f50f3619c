#!/usr/bin/env bash
# The README demo: an embedded control plane, a 2-node local cluster, a data-parallel
# training job (original Batch AI job-file format), its logs streamed, its outputs listed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

export BATCHAI_DATA_DIR=${BATCHAI_DATA_DIR:-$(mktemp -d -t batchai-demo-XXXXXX)}
BATCHAI=.venv/bin/batchai
$BATCHAI serve --port 0 --data-dir "$BATCHAI_DATA_DIR" >"$BATCHAI_DATA_DIR/serve.log" 2>&1 &
SERVER=$!
cleanup() { kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; }
trap cleanup EXIT

for _ in $(seq 100); do
  [ -s "$BATCHAI_DATA_DIR/control-plane.json" ] && break
  kill -0 "$SERVER" 2>/dev/null || { cat "$BATCHAI_DATA_DIR/serve.log"; exit 1; }
  sleep 0.1
done
export BATCHAI_URL=$(.venv/bin/python -c 'import json,sys; print(json.load(open(sys.argv[1]))["url"])' "$BATCHAI_DATA_DIR/control-plane.json")
echo "== control plane at $BATCHAI_URL (data dir $BATCHAI_DATA_DIR)"

set -x
$BATCHAI workspace create demo
$BATCHAI cluster create local -w demo --nodes 2
$BATCHAI experiment create training -w demo
$BATCHAI job create train -w demo -e training -c local -f examples/distributed-training/job.json \
  -p EXAMPLE_DIR="$PWD/examples/distributed-training"
$BATCHAI job logs train -w demo -e training --follow
$BATCHAI job wait train -w demo -e training
$BATCHAI job files train -w demo -e training --output-dir MODEL
$BATCHAI job files train -w demo -e training
$BATCHAI workspace delete demo
