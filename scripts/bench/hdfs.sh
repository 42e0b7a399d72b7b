#!/usr/bin/env bash
# DeepLog's HDFS benchmark with apiwatch's LSTM: train on 70% of hdfs_train, calibrate top-k on
# 10% (session-level false-positive target 1%), hold out 20% as the normal test set (the
# published 553k-session normal test file is not in ../shared/benchmarks), and score it with
# every abnormal session through the worker's own `ort` inference (`apiwatch eval-sessions`).
set -euo pipefail
cd "$(dirname "$0")/../.."
data=../shared/benchmarks/hdfs
work=.cache/bench/hdfs
scripts/onnxruntime.sh >/dev/null
python=$(scripts/train/setup.sh)
cargo build --release --locked --quiet
mkdir -p "$work"
"$python" scripts/train/train.py lstm --sessions "$data/hdfs_train" --out "$work/model" --name hdfs \
  --holdout 0.2 --holdout-out "$work/normal_holdout" --calibration 0.1 --calibrate session --target 0.01 \
  --layers 2 --hidden 64 --epochs 6 --min-count 1 --max-sessions 0 --end-token >&2
./target/release/apiwatch eval-sessions --model "$work/model" --normal "$work/normal_holdout" \
  --abnormal "$data/hdfs_test_abnormal" --top-k "$(python3 -c "import json;print(json.load(open('$work/model/card.json'))['top_k'])")" --top-k 9 \
  --project-normal 553366
