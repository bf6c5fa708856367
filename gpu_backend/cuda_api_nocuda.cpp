// cuda_api for a build without a CUDA toolkit: the same interface (cuda_api.h), every call
// answering unsupported("this build has no CUDA support") so that the probe, the tests and later
// the CLI can say so plainly instead of failing to link. Compiled only when STRATA_HAVE_CUDA is
// OFF.
#include <utility>

#include "gpu_backend/cuda_api.h"

namespace strata::cuda {
namespace {

Status no_cuda(const std::string& call) {
  return Status::unsupported(call + ": this build has no CUDA support");
}

}  // namespace

bool built_with_cuda() { return false; }

StatusOr<int> device_count() { return no_cuda("cudaGetDeviceCount"); }
StatusOr<DeviceProperties> device_properties(int) { return no_cuda("cudaGetDeviceProperties"); }
Status set_device(int) { return no_cuda("cudaSetDevice"); }
StatusOr<MemoryInfo> memory_info() { return no_cuda("cudaMemGetInfo"); }
StatusOr<void*> device_pointer_of_host(void*) { return no_cuda("cudaHostGetDevicePointer"); }
StatusOr<void*> device_malloc(int64_t) { return no_cuda("cudaMalloc"); }
Status device_free(void*) { return no_cuda("cudaFree"); }

StatusOr<PinnedHostBuffer> PinnedHostBuffer::allocate(int64_t, HostPages) {
  return no_cuda("cudaMallocHost");
}
void PinnedHostBuffer::release() {}
PinnedHostBuffer::~PinnedHostBuffer() = default;
PinnedHostBuffer::PinnedHostBuffer(PinnedHostBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      size_bytes_(std::exchange(other.size_bytes_, 0)),
      mapped_bytes_(std::exchange(other.mapped_bytes_, 0)) {}
PinnedHostBuffer& PinnedHostBuffer::operator=(PinnedHostBuffer&& other) noexcept {
  data_ = std::exchange(other.data_, nullptr);
  size_bytes_ = std::exchange(other.size_bytes_, 0);
  mapped_bytes_ = std::exchange(other.mapped_bytes_, 0);
  return *this;
}

StatusOr<HostRegistration> HostRegistration::register_range(void*, int64_t) {
  return no_cuda("cudaHostRegister");
}
HostRegistration::~HostRegistration() = default;
HostRegistration::HostRegistration(HostRegistration&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      size_bytes_(std::exchange(other.size_bytes_, 0)) {}
HostRegistration& HostRegistration::operator=(HostRegistration&& other) noexcept {
  data_ = std::exchange(other.data_, nullptr);
  size_bytes_ = std::exchange(other.size_bytes_, 0);
  return *this;
}

StatusOr<Stream> Stream::create() { return no_cuda("cudaStreamCreateWithFlags"); }
Stream::~Stream() = default;
Stream::Stream(Stream&& other) noexcept : stream_(std::exchange(other.stream_, nullptr)) {}
Stream& Stream::operator=(Stream&& other) noexcept {
  stream_ = std::exchange(other.stream_, nullptr);
  return *this;
}
Status Stream::synchronize() const { return no_cuda("cudaStreamSynchronize"); }
Status Stream::wait(const Event&) const { return no_cuda("cudaStreamWaitEvent"); }

StatusOr<Event> Event::create(EventTiming) { return no_cuda("cudaEventCreateWithFlags"); }
Event::~Event() = default;
Event::Event(Event&& other) noexcept : event_(std::exchange(other.event_, nullptr)) {}
Event& Event::operator=(Event&& other) noexcept {
  event_ = std::exchange(other.event_, nullptr);
  return *this;
}
Status Event::record(const Stream&) const { return no_cuda("cudaEventRecord"); }
Status Event::synchronize() const { return no_cuda("cudaEventSynchronize"); }
StatusOr<bool> Event::is_complete() const { return no_cuda("cudaEventQuery"); }

StatusOr<float> elapsed_ms(const Event&, const Event&) { return no_cuda("cudaEventElapsedTime"); }

Status memcpy_async(void*, const void*, int64_t, CopyKind, const Stream&) {
  return no_cuda("cudaMemcpyAsync");
}

Status memcpy_2d_async(void*, int64_t, const void*, int64_t, int64_t, int64_t, CopyKind,
                       const Stream&) {
  return no_cuda("cudaMemcpy2DAsync");
}

Status memcpy_batch_to_device_async(std::span<void* const>, std::span<const void* const>,
                                    std::span<const size_t>, const Stream&) {
  return no_cuda("cudaMemcpyBatchAsync");
}

Status memset_async(void*, int, int64_t, const Stream&) { return no_cuda("cudaMemsetAsync"); }

Graph::~Graph() = default;
Graph::Graph(Graph&& other) noexcept : exec_(other.exec_) { other.exec_ = nullptr; }
Graph& Graph::operator=(Graph&& other) noexcept {
  exec_ = other.exec_;
  other.exec_ = nullptr;
  return *this;
}
Status Graph::begin_capture(const Stream&) { return no_cuda("cudaStreamBeginCapture"); }
StatusOr<Graph> Graph::end_capture(const Stream&) { return no_cuda("cudaStreamEndCapture"); }
Status Graph::launch(const Stream&) const { return no_cuda("cudaGraphLaunch"); }

Status check_last_launch(const std::string& what) { return no_cuda("launch of " + what); }
Status profiler_start() { return no_cuda("cudaProfilerStart"); }
Status profiler_stop() { return no_cuda("cudaProfilerStop"); }

}  // namespace strata::cuda
