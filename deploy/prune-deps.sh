#!/bin/sh
# Drops what a production node_modules carries for other machines: onnxruntime-node ships its
# native binding for every OS and CPU (about 290 MB; linux/arm64 alone is 25 MB), and this
# machine loads only its own. Used by install.sh and the Dockerfiles after `npm ci --omit=dev`.
set -eu
modules=${1:?usage: prune-deps.sh NODE_MODULES_DIR}
arch=$(node -p process.arch)
found=
for dir in "$modules"/onnxruntime-node/bin/napi-v*/*/*; do
  [ -d "$dir" ] || continue
  case "$dir" in
    */linux/"$arch") [ -f "$dir/onnxruntime_binding.node" ] && found=1 ;;
    *) rm -rf "$dir" ;;
  esac
done
for dir in "$modules"/onnxruntime-node/bin/napi-v*/*; do
  [ -d "$dir" ] && [ -z "$(ls -A "$dir")" ] && rmdir "$dir"
done
if [ -z "$found" ]; then
  echo "prune-deps.sh: $modules/onnxruntime-node has no native binding for linux/$arch; onnxruntime-node ships linux/arm64 and linux/x64 only" >&2
  exit 1
fi
