#!/usr/bin/env bash
# Installs the Debian (bookworm) packages Strata builds with, only those missing.
# CUDA is optional and comes from the machine (nvcc on PATH or /usr/local/cuda), never from here.
set -euo pipefail
pkgs=(build-essential cmake ninja-build pkg-config git python3
      libdnnl-dev libhwloc-dev libmimalloc-dev libtomlplusplus-dev libcli11-dev nlohmann-json3-dev
      libpcre2-dev ocl-icd-opencl-dev libgtest-dev libgmock-dev libbenchmark-dev clang libclang-rt-14-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#pkgs[@]} packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
