#!/usr/bin/env bash
# Builds the demo page's wasm (release, wasm-bindgen --target web) into web/demo/pkg and,
# unless --build-only is given, serves web/demo at http://localhost:${PORT:-8000}/ with
# python3 -m http.server. Needs the wasm32 target and wasm-bindgen-cli of the version in
# Cargo.lock (bash .ci/web installs both).
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir="${CARGO_TARGET_DIR:-target}"
cargo build --release --target wasm32-unknown-unknown -p wgpu-softmax-web --lib
rm -rf web/demo/pkg
wasm-bindgen --target web --no-typescript --out-dir web/demo/pkg \
  "$target_dir/wasm32-unknown-unknown/release/wgpu_softmax_web.wasm"
echo "built web/demo/pkg"
if [ "${1:-}" = "--build-only" ]; then
  exit 0
fi
port="${PORT:-8000}"
echo "serving web/demo at http://localhost:$port/ (WebGPU needs a browser with it on; Ctrl-C stops)"
exec python3 -m http.server "$port" --bind 127.0.0.1 --directory web/demo
