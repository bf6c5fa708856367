#!/usr/bin/env bash
# The one script for the GPU machine (the `device` tool), which has CUDA, cmake and ninja but
# none of oneDNN, hwloc, mimalloc, toml++, CLI11, nlohmann-json, PCRE2, GoogleTest.
#
# Here (the dev machine), once:   scripts/gpu-machine.sh bundle
#   downloads those Debian packages into .debs/ (git-ignored) and copies the golden files the
#   device tests need into .golden/ (git-ignored). Carry both: carry=[".debs", ".golden"].
# There:                          scripts/gpu-machine.sh run [STEP...]
#   unpacks the packages into /tmp/strata-prefix, builds (CUDA on), and runs the steps:
#     tests      every GoogleTest suite (GPU tests included), log under $OUT
#     gpu-tests  only the GPU suites: gpu_backend kernels and the golden forward tests (exec)
#     gpu-cli    strata run on the default model with --device gpu and --device cpu, greedy: the
#                generated ids must be the same
#     ncu-step   Nsight Compute durations of every kernel of one llama3-8b decode step
#                (STRATA_NCU_STEP_TYPES, default "F16 Q4_0"; STRATA_NCU_STEP_FLAGS: bench flags), summed per kernel name
#     gpu-gemv   bench/gpu_gemv_bench (GPU decode GEMV vs measured HBM read bandwidth)
#     gpu-8b     synth llama3-8b F16/Q8_0/Q4_0 and bench/gpu_e2e_bench on each (decode 64 +
#                prefill 2048 in VRAM vs B/H and FLOPs/G); STRATA_GPU8B_AB="flags[;flags...]": decode again
#                with those flags (scenario gpu-8b-ab), e.g. "--fold-norms 0 --fuse-rope-store 0"
#     offload    synth each case of STRATA_OFFLOAD_CASES ("shape:type:budget[:policies] ...", default the
#                three of BENCHMARKS.md) and bench/offload_bench on it under every policy
#                (STRATA_OFFLOAD_POLICIES, _DECODE; STRATA_OFFLOAD_FLAGS="--profile" splits the
#                prefill's GPU time; STRATA_OFFLOAD_AB="flags[;flags]": each case again with
#                those flags, e.g. "--decode-phase-rows 8"; a case with a budget the model fits in, e.g.
#                llama3-70b:Q4_0:60GiB, gives the all-resident compute time to compare with)
#     ctx        synth llama3-8b Q4_0 and bench/long_context_bench (scenario ctx-8b: tiered KV,
#                8 GiB, decode at STRATA_CTX_CONTEXTS, prefill of STRATA_CTX_PREFILL tokens), for
#                each STRATA_CTX_MODES (cold attention: prefetch into VRAM staging, cpu = prefetch
#                plus a CPU share of decode attention; in-place = read over PCIe where they lie;
#                MODE-small: the same with --host-pages small, cudaMallocHost's 4 KiB pages;
#                MODE:q8_0: a q8_0 KV cache instead of f16, e.g. STRATA_CTX_MODES="cpu cpu:q8_0";
#                MODE:KV:N: the cold worker's threads, --cold-worker-threads N)
#     cpu-attn   bench/cpu_attention_bench (cpu::attention_range over f16 KV vs C; ctx runs it too)
#     attn-ab    the same with the carried .ab/ files in place of the tree's (a kernel's A/B)
#     gemv       bench/gemv_bench (CPU decode GEMV vs measured read bandwidth)
#     gemv-skinny  gemv_bench at batch 16: bf16 tiles vs int8 tiles (STRATA_SKINNY_THREADS)
#     cpu-ab     CPU decode f32 vs int8 activations alternated (STRATA_CPUAB_TYPES, _ROUNDS), then
#                gemv_bench at STRATA_CPUAB_THREADS thread counts
#     cpu-8b     synth llama3-8b F16/Q8_0/Q4_0 and bench/cpu_e2e_bench on each (decode + prefill 2048;
#                STRATA_CPU8B_ACTIVATIONS="f32 int8" (default) also decodes with the integer GEMV;
#                STRATA_CPU8B_ATTENTION="amx,onednn" prefills once per prefill-attention kernel)
#     train      (starts first, in the background) trains the default model on the GPU from the
#                carried .train/ folder (tools/default_model/README.md) into $OUT
#     cpu-gemm   the AMX prefill GEMM / attention tests and bench/cpu_gemm_bench (vs the tile
#                unit's rate)
#     diag       CPU flags (AMX?) and oneDNN's choice of kernel for a bf16 matmul
#   writes JSON lines to $OUT/bench.jsonl and prints a short table last.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
mode=${1:-run}
shift || true

debs=(libdnnl-dev libdnnl2 libhwloc-dev libhwloc15 libmimalloc-dev libmimalloc2.0
      libtomlplusplus-dev libtomlplusplus3 libcli11-dev nlohmann-json3-dev libpcre2-dev
      libpcre2-8-0 libpcre2-16-0 libpcre2-32-0 libpcre2-posix3 ocl-icd-opencl-dev ocl-icd-libopencl1 opencl-c-headers opencl-clhpp-headers libgtest-dev libgmock-dev
      libbenchmark-dev libbenchmark1debian pkgconf pkgconf-bin libpkgconf3 libudev1 libxml2 libicu72)

if [ "$mode" = bundle ]; then
  mkdir -p .debs && (cd .debs && apt-get download "${debs[@]}")
  td=${STRATA_TESTDATA_DIR:-$root/../shared/testdata}
  rm -rf .golden && mkdir -p .golden/models/tiny-llama .golden/models/tiny-qwen2 .golden/vocab
  # Under 64 MiB with the packages: tiny-llama's quantized files, one dense file, the HF folder.
  cp "$td"/models/README.md .golden/models/
  cp "$td"/models/tiny-llama/{manifest.json,tiny-llama-F16.gguf,tiny-llama-BF16.gguf,tiny-llama-Q8_0.gguf,tiny-llama-Q4_0.gguf,tiny-llama-Q4_K.gguf,tiny-llama-Q6_K.gguf} .golden/models/tiny-llama/
  cp "$td"/models/tiny-llama/logits-{dense,Q8_0,Q4_0,Q4_K,Q6_K}.f32 .golden/models/tiny-llama/
  du -sh .debs .golden
  exit 0
fi

out=${OUT:-$root/build-gpu/out}
mkdir -p "$out"
prefix=/tmp/strata-prefix
if [ ! -d "$prefix/usr" ]; then
  for f in .debs/*.deb; do dpkg -x "$f" "$prefix"; done
fi
lib=$prefix/usr/lib/x86_64-linux-gnu
export PATH=$prefix/usr/bin:$PATH
export LD_LIBRARY_PATH=$lib:${LD_LIBRARY_PATH:-}
export PKG_CONFIG_LIBDIR=$lib/pkgconfig:$prefix/usr/share/pkgconfig
export PKG_CONFIG_SYSROOT_DIR=$prefix
export PATH=/usr/local/cuda/bin:$PATH
# The device copy's .git can lag the working tree it carries (it said c0b9724 for four later
# commits on 2026-12-02): pass STRATA_COMMIT=$(git rev-parse --short HEAD) from here.
commit=${STRATA_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || echo none)
echo "device: $gpu / $cpu / $(nproc) cpus"

testdata=$root/.golden
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix/usr" \
  -DPKG_CONFIG_EXECUTABLE="$prefix/usr/bin/pkgconf" -DSTRATA_TESTDATA_DIR="$testdata" \
  -DCMAKE_CUDA_ARCHITECTURES=90 2>&1 | tail -3
ninja -C build-gpu ${STRATA_NINJA_TARGETS:-} 2>&1 | grep -E "error|FAILED|warning: .*gpu_backend" | head -40 || true; ninja -C build-gpu ${STRATA_NINJA_TARGETS:-} 2>&1 | tail -1

steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(tests gemv cpu-8b)
train_pid=""
if [[ " ${steps[*]} " == *" train "* ]]; then
  PYTHONUNBUFFERED=1 python3 tools/default_model/train.py --data .train --out "$out" \
    --minutes "${STRATA_TRAIN_MINUTES:-6}" > /tmp/train.out 2>&1 &
  train_pid=$!
fi
jsonl=$out/bench.jsonl
# cpu_attention_bench at other thread counts and sizes: STRATA_ATTN_RUNS="threads:tokens[:flag]
# ...", e.g. 16:65536:--huge-pages.
# Per-thread rates that stay flat with threads, and a KV that fits in cache running faster, say
# the kernel waits on memory latency rather than on compute or on the memory's bandwidth.
attn_runs() {
  for run in ${STRATA_ATTN_RUNS:-}; do
    IFS=: read -r threads tokens flag <<< "$run"
    echo -n "$run: "
    OMP_NUM_THREADS=$threads build-gpu/bench/cpu_attention_bench --tokens "$tokens" ${flag:-} \
      --read-gib 2 --json-out "$jsonl" --commit "$commit" 2>&1 | tail -2 | head -1 || true
  done
}

for step in "${steps[@]}"; do
  case $step in
    tests)
      (ctest --test-dir build-gpu -j8 --timeout 600 2>&1 || true) | tee "$out/ctest.log" | tail -15 ;;
    gpu-tests)
      # The binaries directly (one CUDA context per binary, not per test as under ctest); the
      # golden suite only for its GPU cases (the CPU ones run in CI).
      # Each under a time limit, so that a hang (a stream waiting on an event never recorded)
      # still leaves the other suites' logs and the later steps.
      tl=${STRATA_TEST_TIMEOUT:-240}
      timeout "$tl" build-gpu/tests/strata_gpu_backend_tests > "$out/gtest-gpu_backend.log" 2>&1 || true
      timeout "$tl" build-gpu/tests/strata_exec_tests --gtest_filter="${STRATA_EXEC_FILTER:-*gpu*}" > "$out/gtest-exec.log" 2>&1 || true
      timeout "$tl" build-gpu/tests/strata_cli_tests --gtest_filter='*Gpu*' > "$out/gtest-cli.log" 2>&1 || true
      for t in gpu_backend exec cli; do
        echo "== $t"
        grep -E "^\[  FAILED  \]|Failure|rel L2|Which is|Expected" "$out/gtest-$t.log" | head -60 || true
        grep -E "^\[  (PASSED|FAILED|SKIPPED)  \] [0-9]+ test|tests? from .* ran" "$out/gtest-$t.log" || tail -5 "$out/gtest-$t.log"
      done ;;
    gpu-cli)
      m=models/default/strata-tiny.gguf
      for d in gpu cpu; do
        build-gpu/strata run -m "$m" -p "In the beginning God created" -n 48 --temp 0 \
          --device "$d" --json > "/tmp/run-$d.json" 2> "/tmp/run-$d.err" || cat "/tmp/run-$d.err"
      done
      python3 - /tmp/run-gpu.json /tmp/run-cpu.json <<'PY' || true
import json, sys
g, c = (json.load(open(p)) for p in sys.argv[1:3])
print("gpu:", repr(g["text"][:120]))
print("gpu tok/s prompt %.1f gen %.1f, vram peak %d B" % (g["timings"]["prompt_tokens_per_s"],
      g["timings"]["generation_tokens_per_s"], g["memory"]["vram_peak_bytes"]))
print("greedy ids gpu == cpu:", g["generated_ids"] == c["generated_ids"], len(g["generated_ids"]))
PY
      ;;
    ncu)
      # Nsight Compute on the decode GEMV of one layer (the second, warm pass) per type.
      for t in ${STRATA_NCU_TYPES:-F16 Q8_0 Q4_0}; do
        ncu --clock-control none --launch-skip 7 --launch-count 7 -k regex:"gemv_(mma_)?kernel" \
          --section SpeedOfLight --section Occupancy --section WarpStateStats --section LaunchStats \
          --section MemoryWorkloadAnalysis --section SchedulerStats \
          build-gpu/bench/gpu_gemv_bench --types "$t" --layers 1 --repeats 1 > "$out/ncu-$t.txt" 2>&1 || true
        echo "== ncu $t"
        grep -E "gemv_(mma_)?kernel<|DRAM Throughput|Duration|Achieved Occupancy|Registers Per Thread|Warp Cycles Per Issued|Issued Warp Per Scheduler|No Eligible|L1/TEX Hit|Mem Busy|Max Bandwidth" "$out/ncu-$t.txt" | head -80 || true
      done ;;
    ncu-step)
      # Nsight Compute on every kernel of one warm decode step (graph replay) of llama3-8b per
      # type: each kernel's own duration, summed per kernel name. Keeps the model for gpu-8b.
      for t in ${STRATA_NCU_STEP_TYPES:-F16 Q4_0}; do
        m=/tmp/llama3-8b-$t.gguf
        [ -f "$m" ] || build-gpu/strata synth --shape llama3-8b --type "$t" --out "$m" 2>&1 | tail -1
        ncu --clock-control none --profile-from-start off --metrics gpu__time_duration.sum \
          --csv --page raw --print-units base --log-file "$out/ncu-step-$t.csv" \
          build-gpu/bench/gpu_e2e_bench -m "$m" --prefill 0 --decode 4 --read-gib 1 --ncu-step ${STRATA_NCU_STEP_FLAGS:-} \
          > /dev/null 2>&1 || true
        echo "== ncu-step $t"
        python3 scripts/ncu_step_summary.py "$out/ncu-step-$t.csv" || true
      done ;;
    gpu-gemv)
      build-gpu/bench/gpu_gemv_bench --json "$jsonl" --commit "$commit" ${STRATA_GEMV_FLAGS:-} 2>&1 \
        | grep -v '^{' || true ;;
    gpu-8b)
      for t in ${STRATA_GPU8B_TYPES:-F16 Q8_0 Q4_0}; do
        m=/tmp/llama3-8b-$t.gguf
        [ -f "$m" ] || build-gpu/strata synth --shape llama3-8b --type "$t" --out "$m" 2>&1 | tail -1
        build-gpu/bench/gpu_e2e_bench -m "$m" --model-name llama3-8b --scenario gpu-8b \
          --prefill 2048 --decode 64 --json-out "$jsonl" --commit "$commit" ${STRATA_GPU8B_FLAGS:-} 2>&1 | tail -4
        # Decode again with other executor flags (an A/B): each ';'-separated set in turn.
        IFS=';' read -ra ab_sets <<< "${STRATA_GPU8B_AB:-}"
        for ab in "${ab_sets[@]}"; do
          build-gpu/bench/gpu_e2e_bench -m "$m" --model-name llama3-8b --scenario gpu-8b-ab \
            --prefill 0 --decode 64 --json-out "$jsonl" --commit "$commit" $ab 2>&1 | tail -2
        done
        rm -f "$m"  # the disk holds one 8B model at a time comfortably
      done ;;
    offload)
      cases=(${STRATA_OFFLOAD_CASES:-llama3-8b:F16:8GiB qwen2.5-14b:Q8_0:8GiB llama3-70b:Q4_0:24GiB})
      for i in "${!cases[@]}"; do
        # shape:type:budget[:policy,policy...]
        IFS=: read -r shape t budget pols <<< "${cases[$i]}"
        IFS=: read -r next_shape next_t _ <<< "${cases[$((i + 1))]:-::}"
        m=/tmp/$shape-$t.gguf
        [ -f "$m" ] || build-gpu/strata synth --shape "$shape" --type "$t" --out "$m" 2>&1 | tail -1
        # The synthesized file's dirty pages are written back first: while the kernel flushed 15 GB,
        # the run's CPU GEMV probe read 15.9 GB/s instead of ~84 (2026-12-07) and the plan was off.
        sync
        timeout "${STRATA_BENCH_TIMEOUT:-300}" build-gpu/bench/offload_bench -m "$m" --model-name "$shape" --scenario "off-$shape" \
          --vram-budget "$budget" --policies "${pols:-${STRATA_OFFLOAD_POLICIES:-auto,gpu-first,stream,cpu}}" \
          --decode "${STRATA_OFFLOAD_DECODE:-32}" --prefill "${STRATA_OFFLOAD_PREFILL:-2048}" --json-out "$jsonl" \
          --commit "$commit" ${STRATA_OFFLOAD_FLAGS:-} 2>&1 | grep -v '^{' | tail -16 || true
        # STRATA_OFFLOAD_AB="flags[;flags...]": the case again with each set of flags added (an A/B
        # in one call), e.g. "--decode-phase-rows 8 --prefill 0".
        IFS=';' read -ra abs <<< "${STRATA_OFFLOAD_AB:-}"
        for ab in "${abs[@]}"; do
          echo "== $shape $t $budget with: $ab"
          timeout "${STRATA_BENCH_TIMEOUT:-300}" build-gpu/bench/offload_bench -m "$m" --model-name "$shape" --scenario "off-$shape-ab" \
            --vram-budget "$budget" --policies "${STRATA_OFFLOAD_AB_POLICIES:-${pols:-${STRATA_OFFLOAD_POLICIES:-auto,gpu-first,stream,cpu}}}" \
            --decode "${STRATA_OFFLOAD_DECODE:-32}" --prefill "${STRATA_OFFLOAD_PREFILL:-2048}" --json-out "$jsonl" \
            --commit "$commit" ${STRATA_OFFLOAD_FLAGS:-} $ab 2>&1 | grep -v '^{' | tail -16 || true
        done
        # The disk holds one large model at a time: keep it only for a next case of the same file.
        [ "$next_shape:$next_t" = "$shape:$t" ] || rm -f "$m"
      done ;;
    cpu-attn)
      for kv in f16 q8_0; do
        build-gpu/bench/cpu_attention_bench --kv-type "$kv" --json-out "$jsonl" --commit "$commit" 2>&1 | tail -1
      done
      attn_runs ;;
    attn-ab)
      # A/B of the CPU attention kernel in one call: for each carried, git-ignored folder of
      # STRATA_AB (default .ab), its files (at their repo paths) replace the tree's,
      # cpu_attention_bench is rebuilt and the STRATA_ATTN_RUNS run again; then the tree's own
      # files come back.
      for ab in ${STRATA_AB:-.ab}; do
        [ -d "$ab" ] || { echo "attn-ab: no $ab/ carried"; continue; }
        files=$(cd "$ab" && find . -type f | sed 's|^\./||')
        for f in $files; do cp "$f" "/tmp/ab-keep-$(echo "$f" | tr / _)"; cp "$ab/$f" "$f"; done
        ninja -C build-gpu cpu_attention_bench > /tmp/ab-build.log 2>&1 || tail -5 /tmp/ab-build.log
        echo "attn-ab: with $ab/ ($files)"
        attn_runs
        for f in $files; do cp "/tmp/ab-keep-$(echo "$f" | tr / _)" "$f"; done
        ninja -C build-gpu cpu_attention_bench > /tmp/ab-build.log 2>&1 || tail -5 /tmp/ab-build.log
      done ;;
    ctx)
      # The CPU's share of cold attention first: its rate against C decides the cpu mode.
      for kv in f16 q8_0; do
        build-gpu/bench/cpu_attention_bench --kv-type "$kv" --json-out "$jsonl" --commit "$commit" 2>&1 | tail -1
      done
      attn_runs
      m=/tmp/llama3-8b-Q4_0.gguf
      [ -f "$m" ] || build-gpu/strata synth --shape llama3-8b --type Q4_0 --out "$m" 2>&1 | tail -1
      # A mode may carry the KV type after a colon (cpu:q8_0; f16 without one) and, after a
      # second, the cold worker's threads (cpu:f16:0; long_context_bench --cold-worker-threads).
      for mode in ${STRATA_CTX_MODES:-prefetch cpu}; do
        IFS=: read -r mode kv workers <<< "$mode"
        kv=${kv:-f16}; workers=${workers:--1}
        pages=huge; [[ $mode == *-small ]] && pages=small && mode=${mode%-small}
        echo "== ctx $mode, $pages pages, $kv KV, cold worker threads $workers"
        timeout "${STRATA_BENCH_TIMEOUT:-300}" build-gpu/bench/long_context_bench -m "$m" --model-name llama3-8b \
          --vram-budget 8GiB --contexts "${STRATA_CTX_CONTEXTS:-4096,32768,131072}" \
          --hot-window "${STRATA_CTX_WINDOW:-4096}" --prefill-context "${STRATA_CTX_PREFILL:-32768}" \
          --cold-attention "$mode" --host-pages "$pages" --kv-type "$kv" --cold-worker-threads "$workers" --json-out "$jsonl" --commit "$commit" 2>&1 | grep -v '^{' | tail -16 || true
      done ;;
    gemv)
      build-gpu/bench/gemv_bench --read-gib 8 --json "$jsonl" --commit "$commit" 2>&1 | tail -12 ;;
    gemv-skinny)
      # The CPU's few-row products of a batched decode step: bf16 tiles against int8 tiles
      # (AmxInt8Gemm) at STRATA_SKINNY_THREADS thread counts, in one process each.
      for n in ${STRATA_SKINNY_THREADS:-16 1}; do
        echo "== gemv_bench batch 16, $n threads"
        build-gpu/bench/gemv_bench --threads "$n" --types F16,Q8_0,Q4_0 --batch 16 \
          --activations bf16,amx-int8 --read-gib 4 --json "$jsonl" --commit "$commit" 2>&1 \
          | grep -E '^(C |type|F16|Q8_0|Q4_0)' || true
      done ;;
    train) ;;
    diag)
      echo "cpu flags: $(grep -o -E 'amx[a-z_0-9]*|avx512_bf16|avx512_vnni|avx512f' /proc/cpuinfo | sort -u | tr '\n' ' ')"
      m=/tmp/llama3-8b-Q4_0.gguf
      [ -f "$m" ] || build-gpu/strata synth --shape llama3-8b --type Q4_0 --out "$m" 2>&1 | tail -1
      ONEDNN_VERBOSE=1 build-gpu/bench/cpu_e2e_bench -m "$m" --prefill 512 --decode 4 --read-gib 2 \
        2>&1 | grep -E -m4 'exec,cpu,matmul|info,cpu|prefill [0-9]' || true
      build-gpu/bench/cpu_e2e_bench -m "$m" --model-name llama3-8b --scenario cpu-8b --prefill 2048 \
        --decode 32 --read-gib 8 --json-out "$jsonl" --commit "$commit" 2>&1 | grep -E 'prefill [0-9]|decode [0-9]|Q4_0' ;;
    cpu-8b)
      for t in ${STRATA_CPU8B_TYPES:-F16 Q8_0 Q4_0}; do
        m=/tmp/llama3-8b-$t.gguf
        [ -f "$m" ] || build-gpu/strata synth --shape llama3-8b --type "$t" --out "$m" 2>&1 | tail -1
        build-gpu/bench/cpu_e2e_bench -m "$m" --model-name llama3-8b --scenario cpu-8b \
          --prefill 2048 --decode 64 --read-gib 8 --json-out "$jsonl" --commit "$commit" \
          --prefill-attention "${STRATA_CPU8B_ATTENTION:-amx}" \
          --device-name "$cpu" 2>&1 | grep -E 'prefill [0-9(]|decode [0-9]|^llama3'
        # The integer GEMV (like_llama_cpp tier): decode only, types that have it.
        if [[ " ${STRATA_CPU8B_ACTIVATIONS:-f32 int8} " == *" int8 "* && $t != F16 ]]; then
          build-gpu/bench/cpu_e2e_bench -m "$m" --model-name llama3-8b --scenario cpu-8b \
            --prefill 0 --decode 64 --decode-activations int8 --read-gib 8 --json-out "$jsonl" \
            --commit "$commit" --device-name "$cpu" 2>&1 | grep -E 'decode [0-9]|^llama3' | sed 's/^/int8 /'
        fi
      done ;;
    cpu-gemm)
      # The AMX prefill GEMM: its tests (AMX tiles against the reference), then cpu_gemm_bench
      # against the tile unit's own rate (STRATA_GEMM_FLAGS: e.g. "--unit-rows 64,128").
      OMP_NUM_THREADS=16 timeout 200 build-gpu/tests/strata_cpu_backend_tests \
        --gtest_filter='*Amx*:*Matmul*' 2>&1 | grep -E '^\[  (PASSED|FAILED|SKIPPED) |Failure|rel' | head -20 || true
      OMP_NUM_THREADS=16 timeout 100 build-gpu/tests/strata_exec_tests \
        --gtest_filter='*AmxPrefill*' 2>&1 | grep -E '^\[  (PASSED|FAILED|SKIPPED) |Failure|rel' | head -20 || true
      # STRATA_GEMM_THREADS: thread counts to run the bench at (8 16: do hyperthread pairs share
      # a tile unit?); lscpu says how the host's vCPUs map to cores.
      lscpu | grep -E '^(Model name|Thread|Core|Socket|NUMA node\(s\)|L1d|L2|L3)' || true
      for thr in ${STRATA_GEMM_THREADS:-16}; do
        echo "== cpu_gemm_bench, $thr threads"
        timeout 240 build-gpu/bench/cpu_gemm_bench --threads "$thr" --json-out "$jsonl" \
          --commit "$commit" --device-name "$cpu" ${STRATA_GEMM_FLAGS:-} 2>&1 | grep -vE "^\{" | tail -48 || true
      done ;;
    cpu-ab)
      # CPU decode, f32 against int8 activations, alternated (a shared host's bandwidth drifts
      # within a call), then gemv_bench at several thread counts: a per-thread rate that stays
      # flat as threads double says compute per core, a total that stays flat says memory.
      for t in ${STRATA_CPUAB_TYPES:-Q4_0}; do
        m=/tmp/llama3-8b-$t.gguf
        [ -f "$m" ] || build-gpu/strata synth --shape llama3-8b --type "$t" --out "$m" 2>&1 | tail -1
        for round in $(seq "${STRATA_CPUAB_ROUNDS:-2}"); do
          for a in f32 int8; do
            echo -n "round $round $a: "
            build-gpu/bench/cpu_e2e_bench -m "$m" --model-name llama3-8b --scenario cpu-ab \
              --prefill 0 --decode 64 --decode-activations $a --read-gib 4 --json-out "$jsonl" \
              --commit "$commit" --device-name "$cpu" 2>&1 | grep -E '^llama3' || true
          done
        done
        for n in ${STRATA_CPUAB_THREADS:-8 16}; do
          echo "== gemv_bench, $n threads"
          build-gpu/bench/gemv_bench --threads "$n" --types "F16,$t" --read-gib 4 \
            --working-set-gib 2 --repeats 15 --json "$jsonl" --commit "$commit" 2>&1 | tail -9 | head -5
        done
      done ;;
    *) echo "unknown step $step"; exit 2 ;;
  esac
done
if [ -n "$train_pid" ]; then
  echo "== waiting for training"; wait "$train_pid" || echo "training failed"; tail -25 /tmp/train.out
fi
echo "== summary ($commit)"
[ -f "$jsonl" ] && python3 - "$jsonl" <<'PY' || true
import json, sys
print(f"{'scenario':8} {'type':5} {'phase':8} {'ctx':>6} {'mode':14} {'tok/s':>9} {'roof':>9} {'ratio':>6}")
for line in open(sys.argv[1]):
    r = json.loads(line)
    if 'phase' not in r: continue
    mode = r.get('cold_attention', '') + ('' if r.get('host_huge_pages', True) else '-small')
    if r.get('kv_type', 'f16') != 'f16' or r.get('cold_worker_threads', -1) >= 0: mode += ':' + r.get('kv_type', 'f16')
    if r.get('cold_worker_threads', -1) >= 0: mode += ':' + str(r['cold_worker_threads'])
    print(f"{r['scenario']:8} {r['type']:5} {r['phase']:8} {r.get('context', 0):6} {mode:14} {r['tokens_per_s']:9.2f} {r['roofline_tokens_per_s']:9.2f} {r['ratio_to_roofline']:6.3f}")
PY
[ -n "$train_pid" ] || python3 bench/plot.py "$jsonl" -o "$out/bench.png" 2>/dev/null || echo "(no plot)"
