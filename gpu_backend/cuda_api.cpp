// cuda_api with the CUDA runtime: the only includer of cuda_runtime.h (see cuda_api.h).
#include "gpu_backend/cuda_api.h"

#include <cuda_profiler_api.h>
#include <cuda_runtime.h>
#include <sys/mman.h>

#include <cassert>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>

namespace strata::cuda {
namespace {

// "cudaMalloc(268435456 bytes): out of memory". Also clears the error from the runtime's
// last-error slot: a non-sticky failure (a refused allocation) must not be reported again by the
// next check_last_launch as if a kernel had failed.
Status cuda_status(cudaError_t error, const std::string& call) {
  if (error == cudaSuccess) return Status::ok();
  (void)cudaGetLastError();
  return Status::device_error(call + ": " + cudaGetErrorString(error));
}

std::string bytes_arg(const char* call, int64_t size_bytes) {
  return std::string(call) + "(" + std::to_string(size_bytes) + " bytes)";
}

cudaMemcpyKind memcpy_kind(CopyKind kind) {
  switch (kind) {
    case CopyKind::kHostToDevice:
      return cudaMemcpyHostToDevice;
    case CopyKind::kDeviceToHost:
      return cudaMemcpyDeviceToHost;
    case CopyKind::kDeviceToDevice:
      return cudaMemcpyDeviceToDevice;
    case CopyKind::kHostToHost:
      return cudaMemcpyHostToHost;
  }
  return cudaMemcpyDefault;
}

const char* copy_kind_name(CopyKind kind) {
  switch (kind) {
    case CopyKind::kHostToDevice:
      return "host to device";
    case CopyKind::kDeviceToHost:
      return "device to host";
    case CopyKind::kDeviceToDevice:
      return "device to device";
    case CopyKind::kHostToHost:
      return "host to host";
  }
  return "?";
}

}  // namespace

bool built_with_cuda() { return true; }

StatusOr<int> device_count() {
  int count = 0;
  STRATA_RETURN_IF_ERROR(cuda_status(cudaGetDeviceCount(&count), "cudaGetDeviceCount"));
  return count;
}

StatusOr<DeviceProperties> device_properties(int device) {
  cudaDeviceProp prop{};
  STRATA_RETURN_IF_ERROR(
      cuda_status(cudaGetDeviceProperties(&prop, device),
                  "cudaGetDeviceProperties(device " + std::to_string(device) + ")"));
  DeviceProperties out;
  out.name = prop.name;
  out.compute_major = prop.major;
  out.compute_minor = prop.minor;
  out.sm_count = prop.multiProcessorCount;
  out.total_bytes = static_cast<int64_t>(prop.totalGlobalMem);
  out.l2_cache_bytes = prop.l2CacheSize;
  out.memory_bus_width_bits = prop.memoryBusWidth;
  out.pci_bus_id = prop.pciBusID;
  return out;
}

Status set_device(int device) {
  return cuda_status(cudaSetDevice(device), "cudaSetDevice(" + std::to_string(device) + ")");
}

StatusOr<MemoryInfo> memory_info() {
  size_t free_bytes = 0, total_bytes = 0;
  STRATA_RETURN_IF_ERROR(cuda_status(cudaMemGetInfo(&free_bytes, &total_bytes), "cudaMemGetInfo"));
  return MemoryInfo{static_cast<int64_t>(free_bytes), static_cast<int64_t>(total_bytes)};
}

StatusOr<void*> device_pointer_of_host(void* host_ptr) {
  void* device_ptr = nullptr;
  STRATA_RETURN_IF_ERROR(
      cuda_status(cudaHostGetDevicePointer(&device_ptr, host_ptr, 0), "cudaHostGetDevicePointer"));
  return device_ptr;
}

StatusOr<void*> device_malloc(int64_t size_bytes) {
  if (size_bytes <= 0)
    return Status::invalid_argument(bytes_arg("cudaMalloc", size_bytes) +
                                    ": size must be positive");
  void* ptr = nullptr;
  const cudaError_t error = cudaMalloc(&ptr, static_cast<size_t>(size_bytes));
  if (error == cudaErrorMemoryAllocation) {
    // A full device is a full tier (out_of_memory), not a broken one: the caller may trim and
    // retry.
    (void)cudaGetLastError();
    return Status::out_of_memory(bytes_arg("cudaMalloc", size_bytes) + ": " +
                                 cudaGetErrorString(error));
  }
  STRATA_RETURN_IF_ERROR(cuda_status(error, bytes_arg("cudaMalloc", size_bytes)));
  return ptr;
}

Status device_free(void* device_ptr) { return cuda_status(cudaFree(device_ptr), "cudaFree"); }

// ---- PinnedHostBuffer
// ----------------------------------------------------------------------------

StatusOr<PinnedHostBuffer> PinnedHostBuffer::allocate(int64_t size_bytes, HostPages pages) {
  if (size_bytes <= 0)
    return Status::invalid_argument(bytes_arg("cudaMallocHost", size_bytes) +
                                    ": size must be positive");
  if (pages == HostPages::kDefault) {
    void* ptr = nullptr;
    STRATA_RETURN_IF_ERROR(cuda_status(cudaMallocHost(&ptr, static_cast<size_t>(size_bytes)),
                                       bytes_arg("cudaMallocHost", size_bytes)));
    return PinnedHostBuffer(ptr, size_bytes, 0);
  }
  // 2 MiB-aligned: map a huge page more and trim both ends, so every huge page lies whole inside.
  constexpr size_t kHuge = size_t{2} << 20;
  const size_t rounded = (static_cast<size_t>(size_bytes) + kHuge - 1) / kHuge * kHuge;
  void* raw =
      mmap(nullptr, rounded + kHuge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) {
    return Status::out_of_memory(bytes_arg("mmap", size_bytes) + ": " + std::strerror(errno));
  }
  const auto base = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t aligned = (base + kHuge - 1) / kHuge * kHuge;
  if (aligned > base) munmap(raw, aligned - base);
  if (const uintptr_t tail = base + rounded + kHuge - (aligned + rounded); tail > 0)
    munmap(reinterpret_cast<void*>(aligned + rounded), tail);
  void* ptr = reinterpret_cast<void*>(aligned);
  (void)madvise(ptr, rounded, MADV_HUGEPAGE);  // refused: 4 KiB pages, still correct
  const cudaError_t error =
      cudaHostRegister(ptr, rounded, cudaHostRegisterPortable | cudaHostRegisterMapped);
  if (error != cudaSuccess) {
    munmap(ptr, rounded);
    STRATA_RETURN_IF_ERROR(cuda_status(error, bytes_arg("cudaHostRegister", size_bytes)));
  }
  return PinnedHostBuffer(ptr, size_bytes, static_cast<int64_t>(rounded));
}

void PinnedHostBuffer::release() {
  if (data_ == nullptr) return;
  if (mapped_bytes_ > 0) {
    (void)cudaHostUnregister(data_);
    munmap(data_, static_cast<size_t>(mapped_bytes_));
  } else {
    (void)cudaFreeHost(data_);
  }
  data_ = nullptr;
}

PinnedHostBuffer::~PinnedHostBuffer() { release(); }

PinnedHostBuffer::PinnedHostBuffer(PinnedHostBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      size_bytes_(std::exchange(other.size_bytes_, 0)),
      mapped_bytes_(std::exchange(other.mapped_bytes_, 0)) {}

PinnedHostBuffer& PinnedHostBuffer::operator=(PinnedHostBuffer&& other) noexcept {
  if (this != &other) {
    release();
    data_ = std::exchange(other.data_, nullptr);
    size_bytes_ = std::exchange(other.size_bytes_, 0);
    mapped_bytes_ = std::exchange(other.mapped_bytes_, 0);
  }
  return *this;
}

// ---- HostRegistration
// ----------------------------------------------------------------------------

StatusOr<HostRegistration> HostRegistration::register_range(void* host_ptr, int64_t size_bytes) {
  if (host_ptr == nullptr || size_bytes <= 0) {
    return Status::invalid_argument(bytes_arg("cudaHostRegister", size_bytes) +
                                    ": needs a non-null pointer and a positive size");
  }
  STRATA_RETURN_IF_ERROR(cuda_status(
      cudaHostRegister(host_ptr, static_cast<size_t>(size_bytes), cudaHostRegisterDefault),
      bytes_arg("cudaHostRegister", size_bytes)));
  return HostRegistration(host_ptr, size_bytes);
}

HostRegistration::~HostRegistration() {
  if (data_ != nullptr) (void)cudaHostUnregister(data_);
}

HostRegistration::HostRegistration(HostRegistration&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      size_bytes_(std::exchange(other.size_bytes_, 0)) {}

HostRegistration& HostRegistration::operator=(HostRegistration&& other) noexcept {
  if (this != &other) {
    if (data_ != nullptr) (void)cudaHostUnregister(data_);
    data_ = std::exchange(other.data_, nullptr);
    size_bytes_ = std::exchange(other.size_bytes_, 0);
  }
  return *this;
}

// ---- Stream
// --------------------------------------------------------------------------------------

StatusOr<Stream> Stream::create() {
  cudaStream_t stream = nullptr;
  STRATA_RETURN_IF_ERROR(cuda_status(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking),
                                     "cudaStreamCreateWithFlags"));
  return Stream(stream);
}

Stream::~Stream() {
  if (stream_ != nullptr) (void)cudaStreamDestroy(stream_);
}

Stream::Stream(Stream&& other) noexcept : stream_(std::exchange(other.stream_, nullptr)) {}

Stream& Stream::operator=(Stream&& other) noexcept {
  if (this != &other) {
    if (stream_ != nullptr) (void)cudaStreamDestroy(stream_);
    stream_ = std::exchange(other.stream_, nullptr);
  }
  return *this;
}

Status Stream::synchronize() const {
  assert(stream_ != nullptr);
  return cuda_status(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
}

Status Stream::wait(const Event& event) const {
  assert(stream_ != nullptr && event.native() != nullptr);
  return cuda_status(cudaStreamWaitEvent(stream_, event.native(), 0), "cudaStreamWaitEvent");
}

// ---- Event
// ---------------------------------------------------------------------------------------

StatusOr<Event> Event::create(EventTiming timing) {
  cudaEvent_t event = nullptr;
  const unsigned flags =
      timing == EventTiming::kEnabled ? cudaEventDefault : cudaEventDisableTiming;
  STRATA_RETURN_IF_ERROR(
      cuda_status(cudaEventCreateWithFlags(&event, flags), "cudaEventCreateWithFlags"));
  return Event(event);
}

Event::~Event() {
  if (event_ != nullptr) (void)cudaEventDestroy(event_);
}

Event::Event(Event&& other) noexcept : event_(std::exchange(other.event_, nullptr)) {}

Event& Event::operator=(Event&& other) noexcept {
  if (this != &other) {
    if (event_ != nullptr) (void)cudaEventDestroy(event_);
    event_ = std::exchange(other.event_, nullptr);
  }
  return *this;
}

Status Event::record(const Stream& stream) const {
  assert(event_ != nullptr && stream.native() != nullptr);
  return cuda_status(cudaEventRecord(event_, stream.native()), "cudaEventRecord");
}

Status Event::synchronize() const {
  assert(event_ != nullptr);
  return cuda_status(cudaEventSynchronize(event_), "cudaEventSynchronize");
}

StatusOr<bool> Event::is_complete() const {
  assert(event_ != nullptr);
  const cudaError_t error = cudaEventQuery(event_);
  if (error == cudaErrorNotReady) {
    (void)cudaGetLastError();  // "not ready" is an answer, not a failure
    return false;
  }
  STRATA_RETURN_IF_ERROR(cuda_status(error, "cudaEventQuery"));
  return true;
}

StatusOr<float> elapsed_ms(const Event& start, const Event& end) {
  float ms = 0.0f;
  STRATA_RETURN_IF_ERROR(
      cuda_status(cudaEventElapsedTime(&ms, start.native(), end.native()), "cudaEventElapsedTime"));
  return ms;
}

// ---- Copies and launches
// -------------------------------------------------------------------------

Status memcpy_async(void* dst, const void* src, int64_t size_bytes, CopyKind kind,
                    const Stream& stream) {
  assert(stream.native() != nullptr);
  const std::string call =
      "cudaMemcpyAsync(" + std::to_string(size_bytes) + " bytes, " + copy_kind_name(kind) + ")";
  if (size_bytes < 0) return Status::invalid_argument(call + ": negative size");
  return cuda_status(cudaMemcpyAsync(dst, src, static_cast<size_t>(size_bytes), memcpy_kind(kind),
                                     stream.native()),
                     call);
}

Status memcpy_2d_async(void* dst, int64_t dst_pitch, const void* src, int64_t src_pitch,
                       int64_t width_bytes, int64_t rows, CopyKind kind, const Stream& stream) {
  assert(stream.native() != nullptr);
  const std::string call = "cudaMemcpy2DAsync(" + std::to_string(rows) + " rows of " +
                           std::to_string(width_bytes) + " bytes, " + copy_kind_name(kind) + ")";
  if (width_bytes < 0 || rows < 0 || dst_pitch < width_bytes || src_pitch < width_bytes)
    return Status::invalid_argument(call + ": bad size or pitch");
  return cuda_status(
      cudaMemcpy2DAsync(dst, static_cast<size_t>(dst_pitch), src, static_cast<size_t>(src_pitch),
                        static_cast<size_t>(width_bytes), static_cast<size_t>(rows),
                        memcpy_kind(kind), stream.native()),
      call);
}

Status memcpy_batch_to_device_async(std::span<void* const> dsts, std::span<const void* const> srcs,
                                    std::span<const size_t> sizes, const Stream& stream) {
  assert(stream.native() != nullptr);
  const std::string call = "cudaMemcpyBatchAsync(" + std::to_string(sizes.size()) + " copies)";
  if (dsts.size() != sizes.size() || srcs.size() != sizes.size())
    return Status::invalid_argument(call + ": spans of different lengths");
  if (sizes.empty()) return Status::ok();
#if CUDART_VERSION >= 13000
  cudaMemcpyAttributes attrs{};
  attrs.srcAccessOrder = cudaMemcpySrcAccessOrderStream;  // after the work queued before it
  size_t first = 0;
  return cuda_status(cudaMemcpyBatchAsync(dsts.data(), srcs.data(), sizes.data(), sizes.size(),
                                          &attrs, &first, 1, stream.native()),
                     call);
#else
  for (size_t i = 0; i < sizes.size(); ++i)
    STRATA_RETURN_IF_ERROR(cuda_status(
        cudaMemcpyAsync(dsts[i], srcs[i], sizes[i], cudaMemcpyHostToDevice, stream.native()),
        call));
  return Status::ok();
#endif
}

Graph::~Graph() {
  if (exec_ != nullptr) cudaGraphExecDestroy(exec_);
}
Graph::Graph(Graph&& other) noexcept : exec_(std::exchange(other.exec_, nullptr)) {}
Graph& Graph::operator=(Graph&& other) noexcept {
  if (this != &other) {
    if (exec_ != nullptr) cudaGraphExecDestroy(exec_);
    exec_ = std::exchange(other.exec_, nullptr);
  }
  return *this;
}

Status Graph::begin_capture(const Stream& stream) {
  return cuda_status(cudaStreamBeginCapture(stream.native(), cudaStreamCaptureModeThreadLocal),
                     "cudaStreamBeginCapture");
}

StatusOr<Graph> Graph::end_capture(const Stream& stream) {
  cudaGraph_t graph = nullptr;
  STRATA_RETURN_IF_ERROR(
      cuda_status(cudaStreamEndCapture(stream.native(), &graph), "cudaStreamEndCapture"));
  cudaGraphExec_t exec = nullptr;
  const cudaError_t error = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  STRATA_RETURN_IF_ERROR(cuda_status(error, "cudaGraphInstantiate"));
  return Graph(exec);
}

Status Graph::launch(const Stream& stream) const {
  return cuda_status(cudaGraphLaunch(exec_, stream.native()), "cudaGraphLaunch");
}

Status memset_async(void* device_ptr, int value, int64_t size_bytes, const Stream& stream) {
  const std::string call = "cudaMemsetAsync(" + std::to_string(size_bytes) + " bytes)";
  if (size_bytes < 0) return Status::invalid_argument(call + ": negative size");
  return cuda_status(
      cudaMemsetAsync(device_ptr, value, static_cast<size_t>(size_bytes), stream.native()), call);
}

Status check_last_launch(const std::string& what) {
  const cudaError_t error = cudaGetLastError();
  if (error == cudaSuccess) return Status::ok();
  return Status::device_error("launch of " + what + ": " + cudaGetErrorString(error));
}

Status profiler_start() { return cuda_status(cudaProfilerStart(), "cudaProfilerStart"); }
Status profiler_stop() { return cuda_status(cudaProfilerStop(), "cudaProfilerStop"); }

}  // namespace strata::cuda
