#!/usr/bin/env bash
# Makes the trainer's Python environment (.cache/venv-train) from pinned registry packages.
# Idempotent; prints the interpreter's path.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=.cache/venv-train
req=scripts/train/requirements.txt
if [ ! -x "$venv/bin/python" ] || ! cmp -s "$req" "$venv/requirements.txt"; then
  python3 -m venv "$venv" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req" >&2
  cp "$req" "$venv/requirements.txt"
fi
echo "$PWD/$venv/bin/python"
