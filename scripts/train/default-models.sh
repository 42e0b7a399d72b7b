#!/usr/bin/env bash
# Rebuilds the default models shipped in onnx-models/: 24 simulated hours of normal traffic of
# each topology (seeds 901-903, never used by the evaluation), features exported by the
# worker, trained by scripts/train/train.py, checked and installed as new versions.
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/onnxruntime.sh >/dev/null
python=$(scripts/train/setup.sh)
cargo build --release --locked --quiet
work=.cache/train/default
dirs=()
seed=901
for topo in saas bank retail; do
  ./target/release/apiwatch features --topology "$topo" --seed "$seed" --hours 24 --every 10 --output "$work/$topo"
  rm -f "$work/$topo/events.ndjson"
  dirs+=("$work/$topo")
  seed=$((seed + 1))
done
./target/release/apiwatch train --from-features "$(IFS=,; echo "${dirs[*]}")" --work "$work" --python "$python" --models onnx-models
