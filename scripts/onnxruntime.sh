#!/usr/bin/env bash
# Fetches the ONNX Runtime shared library the worker's models run on, from a package registry
# (the PyPI wheel `onnxruntime`, which bundles `libonnxruntime.so`; it needs nothing beyond libc
# and libstdc++), and unpacks it to .cache/onnxruntime/. The worker looks there by default
# (or at `models.runtime` in its config, or at ORT_DYLIB_PATH). Idempotent; prints the path.
set -euo pipefail
cd "$(dirname "$0")/.."
version=1.31.1
dir=.cache/onnxruntime
lib="$dir/libonnxruntime.so.$version"
if [ ! -f "$lib" ]; then
  command -v python3 >/dev/null || { echo "python3 with pip is needed to fetch the onnxruntime wheel" >&2; exit 1; }
  mkdir -p "$dir/wheel"
  python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$dir/wheel" "onnxruntime==$version" >&2
  wheel=$(ls "$dir"/wheel/onnxruntime-"$version"-*.whl | head -1)
  python3 - "$wheel" "$lib" <<'PY'
import shutil, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.startswith("onnxruntime/capi/libonnxruntime.so"))
    with z.open(name) as src, open(out + ".part", "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
  mv "$lib.part" "$lib"
  rm -rf "$dir/wheel"
fi
ln -sf "libonnxruntime.so.$version" "$dir/libonnxruntime.so"
echo "$PWD/$lib"
