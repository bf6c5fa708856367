#!/usr/bin/env bash
# run_fuzz.sh FUZZER SECONDS [TESTDATA_DIR]: fuzzes for SECONDS from a seed corpus of small GGUF
# files (made by make_seeds.py, plus the small vocab file when the golden data is there).
# Fails when the fuzzer finds a crash; the crashing input is left in the working folder.
set -euo pipefail
fuzzer=$1; seconds=$2; testdata=${3:-}
here=$(cd "$(dirname "$0")" && pwd)
corpus=$(mktemp -d)
trap 'rm -rf "$corpus"' EXIT
python3 "$here/make_seeds.py" "$corpus"
"$fuzzer" -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=4096 \
  -print_final_stats=1 "$corpus" 2>&1 | tail -n 12
echo "fuzz: clean for $seconds s"
