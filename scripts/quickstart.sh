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
if [ ! -f "$model" ]; then
  # No trained default model in this checkout yet: make a tiny random-weight one.
  model=build/tiny-synth.gguf
  ./build/strata synth --shape tiny --type F16 --out "$model"
fi
echo "== strata info $model"
./build/strata info "$model"
echo "== strata tokenize"
./build/strata tokenize -m "$model" "Strata runs models larger than VRAM."
