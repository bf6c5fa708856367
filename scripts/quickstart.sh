#!/usr/bin/env bash
# README's first command: install what is missing, build, and run the main job on the default
# model that ships with the repository (CPU when there is no GPU).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
"$root/scripts/install-deps.sh"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
ninja -C build -j"$(nproc)" strata
model=${STRATA_MODEL:-$root/models/default/strata-tiny.gguf}
echo "== strata info $model"
./build/strata info "$model"
echo "== strata run (greedy, 64 tokens)"
./build/strata run -m "$model" -p "In the beginning" -n 64 --temp 0
