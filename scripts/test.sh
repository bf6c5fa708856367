#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls this script):
#   1. format, tokenizer and model tests under AddressSanitizer + UBSan,
#   2. the GGUF reader's libFuzzer target for a bounded time (STRATA_FUZZ_SECONDS, default 60),
#   3. the full build (CUDA compiled when nvcc is found) and every GoogleTest suite through ctest.
# GPU tests skip without a GPU, saying why. The last line printed is the count summary.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
"$root/scripts/install-deps.sh"
jobs=$(nproc)
testdata=${STRATA_TESTDATA_DIR:-$root/../shared/testdata}
if [ -d "$testdata" ]; then echo "test: golden data at $testdata"; else
  echo "test: WARNING golden data not found at $testdata: those tests will skip"; fi

echo "== 1/3 sanitizers (ASan + UBSan): formats, tokenizer, model, core"
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSTRATA_SANITIZE=ON \
  -DSTRATA_WITH_CUDA=OFF -DSTRATA_BUILD_BENCH=OFF -DSTRATA_TESTDATA_DIR="$testdata" >/dev/null
asan_targets=(strata_formats_tests strata_tokenizer_tests strata_model_tests strata_core_tests)
ninja -C build-asan -j"$jobs" "${asan_targets[@]}"
for t in "${asan_targets[@]}"; do
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "build-asan/tests/$t" --gtest_brief=1
done

echo "== 2/3 fuzzing the GGUF reader for ${STRATA_FUZZ_SECONDS:-60} s"
CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DSTRATA_FUZZ=ON -DSTRATA_WITH_CUDA=OFF -DSTRATA_BUILD_TESTS=OFF -DSTRATA_BUILD_BENCH=OFF >/dev/null
ninja -C build-fuzz -j"$jobs" fuzz_gguf_reader
"$root/tests/fuzz/run_fuzz.sh" build-fuzz/tests/fuzz/fuzz_gguf_reader "${STRATA_FUZZ_SECONDS:-60}" "$testdata"

echo "== 3/3 full build and all suites"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DSTRATA_TESTDATA_DIR="$testdata" >/dev/null
ninja -C build -j"$jobs"
set +e
ctest --test-dir build --output-on-failure -j"$jobs" --timeout 900 2>&1 | tee build/ctest.log
status=${PIPESTATUS[0]}
set -e
total=$(sed -nE 's/.*tests failed out of ([0-9]+).*/\1/p' build/ctest.log | tail -1)
failed=$(sed -nE 's/.* ([0-9]+) tests failed out of.*/\1/p' build/ctest.log | tail -1)
skipped=$(grep -cE '^\s+[0-9]+ - .*\(Skipped\)$' build/ctest.log || true)
total=${total:-0}; failed=${failed:-0}
echo "test summary: $((total - failed - skipped)) passed, ${failed} failed, ${skipped} skipped, of ${total} tests"
exit "$status"
