// cuda_api: the one narrow door to the CUDA runtime (like mimalloc's prim.h is to the OS). It is
// the only file of the project that includes cuda_runtime.h; everything else sees plain values,
// Status and two RAII owners (Stream, Event). Every wrapped call that fails returns a Status naming
// the call and CUDA's own message, e.g. "cudaMalloc(268435456 bytes): out of memory".
//
// A build without CUDA compiles cuda_api_nocuda.cpp instead of cuda_api.cpp: the same functions,
// each returning unsupported("this build has no CUDA support"), so callers need no #ifdef.
//
// Thread safety: the functions are as thread-safe as the CUDA runtime (they keep no state of their
// own). A Stream or Event is used by one thread at a time.
//
// Example usage:
//   STRATA_ASSIGN_OR_RETURN(cuda::Stream copy, cuda::Stream::create());
//   STRATA_ASSIGN_OR_RETURN(cuda::Event done, cuda::Event::create(cuda::EventTiming::kDisabled));
//   STRATA_RETURN_IF_ERROR(cuda::memcpy_async(dev, pinned, n, cuda::CopyKind::kHostToDevice,
//   copy)); STRATA_RETURN_IF_ERROR(done.record(copy)); STRATA_RETURN_IF_ERROR(compute.wait(done));
//   // compute waits on the GPU, the host does not
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "offload/core/status.h"

// The runtime's opaque handle types (cudaStream_t is CUstream_st*, cudaEvent_t is CUevent_st*),
// declared here so that kernel files can launch on a Stream without this header including CUDA's.
struct CUstream_st;
struct CUevent_st;
struct CUgraphExec_st;

namespace strata::cuda {

// True when this build was compiled against the CUDA runtime (cuda_api.cpp), false for the stub.
bool built_with_cuda();

// ---- Devices
// -------------------------------------------------------------------------------------

struct DeviceProperties {
  std::string name;            // "NVIDIA H100 80GB HBM3"
  int compute_major = 0;       // 9 for sm_90
  int compute_minor = 0;       // 0 for sm_90
  int sm_count = 0;            // streaming multiprocessors
  int64_t total_bytes = 0;     // global memory
  int64_t l2_cache_bytes = 0;  //
  int memory_bus_width_bits = 0;
  int pci_bus_id = 0;
};

struct MemoryInfo {
  int64_t free_bytes = 0;
  int64_t total_bytes = 0;
};

// cudaGetDeviceCount. Without a driver or a device this is an error (CUDA reports "no CUDA-capable
// device is detected" or "CUDA driver version is insufficient ..."), never 0 with OK.
StatusOr<int> device_count();
StatusOr<DeviceProperties> device_properties(int device);
// Makes `device` current for the calling thread.
Status set_device(int device);
// Free and total memory of the current device (cudaMemGetInfo).
StatusOr<MemoryInfo> memory_info();

// ---- Device memory
// ------------------------------------------------------------------------------- REQUIRES: called
// only by the arena's real allocator (gpu_backend/cuda_device_allocator.*). Every device byte of
// the runtime comes from memory/'s DeviceArena, which enforces --vram-budget; a direct call
// anywhere else would escape the budget.
StatusOr<void*> device_malloc(int64_t size_bytes);
Status device_free(void* device_ptr);

// ---- Pinned host memory
// --------------------------------------------------------------------------

// How PinnedHostBuffer gets its pages. kHuge: anonymous memory in 2 MiB pages (transparent huge
// pages, madvise) page-locked by cudaHostRegister, for buffers the CPU reads at its full rate
// (the cold KV tier): cudaMallocHost's 4 KiB pages cost the H200's host a TLB walk every 4 KiB,
// nested ones in a VM. If the kernel grants no huge pages it is still correct, in 4 KiB pages.
enum class HostPages { kDefault, kHuge };

// Page-locked host memory (cudaMallocHost, or registered huge pages), freed when the owner is
// destroyed.
class PinnedHostBuffer {
 public:
  static StatusOr<PinnedHostBuffer> allocate(int64_t size_bytes,
                                             HostPages pages = HostPages::kDefault);
  PinnedHostBuffer() = default;
  ~PinnedHostBuffer();
  PinnedHostBuffer(PinnedHostBuffer&& other) noexcept;
  PinnedHostBuffer& operator=(PinnedHostBuffer&& other) noexcept;
  PinnedHostBuffer(const PinnedHostBuffer&) = delete;
  PinnedHostBuffer& operator=(const PinnedHostBuffer&) = delete;

  void* data() const { return data_; }
  int64_t size_bytes() const { return size_bytes_; }

 private:
  PinnedHostBuffer(void* data, int64_t size_bytes, int64_t mapped_bytes)
      : data_(data), size_bytes_(size_bytes), mapped_bytes_(mapped_bytes) {}
  void release();
  void* data_ = nullptr;
  int64_t size_bytes_ = 0;
  int64_t mapped_bytes_ = 0;  // > 0: registered huge pages, munmap'd after cudaHostUnregister
};

// The address under which kernels read page-locked host memory directly over PCIe (zero-copy,
// cudaHostGetDevicePointer; with unified addressing, memory from cudaMallocHost maps to its own
// address). An error for memory CUDA did not page-lock or map.
StatusOr<void*> device_pointer_of_host(void* host_ptr);

// Pins existing host memory (cudaHostRegister, e.g. a mapped file range) until destroyed.
// REQUIRES: the memory outlives the registration.
class HostRegistration {
 public:
  static StatusOr<HostRegistration> register_range(void* host_ptr, int64_t size_bytes);
  HostRegistration() = default;
  ~HostRegistration();
  HostRegistration(HostRegistration&& other) noexcept;
  HostRegistration& operator=(HostRegistration&& other) noexcept;
  HostRegistration(const HostRegistration&) = delete;
  HostRegistration& operator=(const HostRegistration&) = delete;

  void* data() const { return data_; }
  int64_t size_bytes() const { return size_bytes_; }

 private:
  HostRegistration(void* data, int64_t size_bytes) : data_(data), size_bytes_(size_bytes) {}
  void* data_ = nullptr;
  int64_t size_bytes_ = 0;
};

// ---- Streams and events
// --------------------------------------------------------------------------

class Event;

// An owned, non-blocking CUDA stream (cudaStreamNonBlocking: no implicit sync with stream 0).
class Stream {
 public:
  static StatusOr<Stream> create();
  Stream() = default;  // empty: owns nothing; only a moved-to target
  ~Stream();
  Stream(Stream&& other) noexcept;
  Stream& operator=(Stream&& other) noexcept;
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  // For kernel launches in .cu files: `kernel<<<grid, block, 0, stream.native()>>>`.
  CUstream_st* native() const { return stream_; }
  // Blocks the host until all work queued so far has finished. Not for the hot path.
  Status synchronize() const;
  // Work queued on this stream after this call waits (on the GPU) until `event` has completed.
  Status wait(const Event& event) const;

 private:
  explicit Stream(CUstream_st* stream) : stream_(stream) {}
  CUstream_st* stream_ = nullptr;
};

enum class EventTiming { kDisabled, kEnabled };

// An owned CUDA event. Timing is off unless asked for: untimed events are cheaper to record/wait.
class Event {
 public:
  static StatusOr<Event> create(EventTiming timing);
  Event() = default;
  ~Event();
  Event(Event&& other) noexcept;
  Event& operator=(Event&& other) noexcept;
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;

  CUevent_st* native() const { return event_; }
  // Captures the work queued on `stream` so far.
  Status record(const Stream& stream) const;
  // Blocks the host until the captured work has completed.
  Status synchronize() const;
  // True when the captured work has completed (cudaEventQuery), without blocking.
  StatusOr<bool> is_complete() const;

 private:
  explicit Event(CUevent_st* event) : event_(event) {}
  CUevent_st* event_ = nullptr;
};

// ---- Graphs
// --------------------------------------------------------------------------------------
// A captured and instantiated CUDA graph: the kernels one call queued on a stream, replayed with
// one launch. The decode step is captured once per shape and replayed every token: that removes
// the CPU's per-kernel launch cost and the gaps between the step's few hundred small kernels.
class Graph {
 public:
  Graph() = default;  // empty
  ~Graph();
  Graph(Graph&& other) noexcept;
  Graph& operator=(Graph&& other) noexcept;
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;

  // Starts capturing the work queued on `stream` from the calling thread (nothing runs).
  static Status begin_capture(const Stream& stream);
  // Ends the capture begun on `stream` and instantiates what was queued.
  static StatusOr<Graph> end_capture(const Stream& stream);
  // Queues the whole graph on `stream`.
  Status launch(const Stream& stream) const;
  bool empty() const { return exec_ == nullptr; }

 private:
  explicit Graph(CUgraphExec_st* exec) : exec_(exec) {}
  CUgraphExec_st* exec_ = nullptr;
};

// Milliseconds of GPU time between two recorded, completed events.
// REQUIRES: both created with EventTiming::kEnabled.
StatusOr<float> elapsed_ms(const Event& start, const Event& end);

// ---- Copies and launches
// -------------------------------------------------------------------------

enum class CopyKind { kHostToDevice, kDeviceToHost, kDeviceToDevice, kHostToHost };

// Queues a copy on `stream`. It is asynchronous only from/to pinned host memory; pageable host
// memory makes CUDA stage it synchronously.
Status memcpy_async(void* dst, const void* src, int64_t size_bytes, CopyKind kind,
                    const Stream& stream);

// Queues `rows` copies of `width_bytes`, row i from src + i * src_pitch to dst + i * dst_pitch
// (cudaMemcpy2DAsync: one DMA for strided data, e.g. a KV block's layers). Asynchronous only
// from/to pinned host memory, as memcpy_async.
Status memcpy_2d_async(void* dst, int64_t dst_pitch, const void* src, int64_t src_pitch,
                       int64_t width_bytes, int64_t rows, CopyKind kind, const Stream& stream);

// Queues copies i of sizes[i] bytes from host srcs[i] (pinned) to device dsts[i] in one call
// (cudaMemcpyBatchAsync from CUDA 13; a cudaMemcpyAsync each before). Staging a layer's cold KV
// blocks is ~280 runs at 128k (the cold slabs hold 32 blocks of a layer each), and a call per
// run took host time in the decode step's serial part. In stream order as a whole; the copies
// of one batch run in any order among themselves. REQUIRES: the three spans of one length.
Status memcpy_batch_to_device_async(std::span<void* const> dsts, std::span<const void* const> srcs,
                                    std::span<const size_t> sizes, const Stream& stream);

// Queues a fill of `size_bytes` device bytes with the byte `value` on `stream` (tests poison
// outputs with 0xFF: every float becomes NaN, so an element a kernel did not write shows).
Status memset_async(void* device_ptr, int value, int64_t size_bytes, const Stream& stream);

// cudaGetLastError after a kernel launch: OK, or a device_error naming `what` (the kernel) and
// CUDA's message. It also clears a non-sticky error so the next check does not report it again.
Status check_last_launch(const std::string& what);

// Brackets the region a profiler run with --profile-from-start off records (Nsight Compute on one
// decode step: gpu-machine.sh's ncu-step).
Status profiler_start();
Status profiler_stop();

}  // namespace strata::cuda
