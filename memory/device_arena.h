// DeviceArena: the VRAM arena with a hard byte budget. Every device byte of the runtime (weights,
// KV blocks, the staging ring, activations, cuBLAS workspace) is a DeviceBuffer carved from it, so
// --vram-budget holds by construction and a 24 GiB card and an 80 GiB card behave alike in tests.
//
// The arena obtains large chunks from a DeviceAllocator (the real one calls cudaMalloc, see
// gpu_backend/cuda_device_allocator.h; tests use plain host memory) and sub-allocates them
// best-fit, in multiples of kDeviceArenaAlignmentBytes, coalescing freed neighbours. The budget
// bounds the bytes *reserved* from the allocator (the sum of chunk sizes), which bounds what is in
// use.
//
// Invariants:
//   used_bytes <= reserved_bytes <= budget_bytes
//   used_bytes = sum of used_bytes_by_tag = sum of the aligned sizes of the live buffers
//   in each chunk, live ranges and free ranges tile [0, chunk size) exactly, and no two free ranges
//   are adjacent (they are coalesced on release)
//   every buffer's address is a multiple of kDeviceArenaAlignmentBytes
// Freed ranges stay reserved for reuse (a steady workload calls the allocator no more); trim()
// returns wholly free chunks, and allocate() trims by itself before refusing for the budget.
//
// Ownership: the arena owns its allocator and its chunks. A DeviceBuffer returns its range when
// destroyed. REQUIRES: every DeviceBuffer is destroyed before its arena.
// Thread-safe: allocate, trim, stats and buffer destruction may run on any threads.
//
// Example usage:
//   DeviceArenaOptions options{.budget_bytes = 20ll << 30};
//   STRATA_ASSIGN_OR_RETURN(std::unique_ptr<DeviceArena> arena,
//                           DeviceArena::create(options, make_cuda_device_allocator(0)));
//   STRATA_ASSIGN_OR_RETURN(DeviceBuffer kv, arena->allocate(kv_bytes, DeviceMemoryTag::kKv));
//   launch(kv.data(), ...);                  // kv's range goes back to the arena when kv dies
//   print(arena->stats());                   // used / peak per tag
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <tuple>

#include "offload/core/status.h"

namespace strata {

// Buffers start on 256-byte boundaries: cudaMalloc's guarantee, and what vector loads, cuBLAS and
// TMA descriptors expect.
inline constexpr int64_t kDeviceArenaAlignmentBytes = 256;

// What a device buffer holds; the arena accounts used and peak bytes per tag.
enum class DeviceMemoryTag : int { kWeights, kKv, kStaging, kActivations, kWorkspace };
inline constexpr int kNumDeviceMemoryTags = 5;
// "weights", "kv", "staging", "activations", "workspace"
const char* device_memory_tag_name(DeviceMemoryTag tag);

// Where the arena gets its chunks. The real one is gpu_backend's make_cuda_device_allocator();
// a host-only fake (plain host memory) backs the arena in tests without a GPU.
class DeviceAllocator {
 public:
  virtual ~DeviceAllocator() = default;
  // `size_bytes` of uninitialised memory aligned to at least kDeviceArenaAlignmentBytes, or
  // out_of_memory (the device is full) / device_error, naming the call.
  virtual StatusOr<void*> allocate(int64_t size_bytes) = 0;
  // REQUIRES: data came from allocate() of this allocator and was not freed yet.
  virtual void free(void* data) = 0;
};

struct DeviceArenaOptions {
  // The hard budget: the arena never holds more device bytes than this. Required (> 0).
  int64_t budget_bytes = 0;
  // Bytes per allocator call (default 256 MiB). A larger request gets a chunk of its own size; the
  // last chunk is clipped to what the budget has left. Must be a multiple of the alignment.
  int64_t chunk_bytes = int64_t{256} << 20;

  Status validate() const;
};

class DeviceArena;

// A range of device memory from a DeviceArena, returned to it when destroyed. Move-only.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;  // empty
  ~DeviceBuffer() { reset(); }
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  // Device address; nullptr when empty. Never dereference on the host (except with a fake device).
  void* data() const { return data_; }
  int64_t size_bytes() const { return size_bytes_; }          // as requested
  int64_t reserved_bytes() const { return reserved_bytes_; }  // rounded up to the alignment
  DeviceMemoryTag tag() const { return tag_; }
  bool empty() const { return data_ == nullptr; }
  // Returns the range to the arena now; the buffer becomes empty.
  void reset();

 private:
  friend class DeviceArena;
  DeviceArena* arena_ = nullptr;
  void* data_ = nullptr;
  int64_t size_bytes_ = 0;
  int64_t reserved_bytes_ = 0;
  int64_t chunk_id_ = 0;
  int64_t offset_bytes_ = 0;  // within the chunk
  DeviceMemoryTag tag_ = DeviceMemoryTag::kWeights;
};

struct DeviceArenaStats {
  int64_t budget_bytes = 0;
  int64_t reserved_bytes = 0;  // held from the allocator (sum of chunk sizes)
  int64_t peak_reserved_bytes = 0;
  int64_t used_bytes = 0;  // in live buffers (aligned sizes)
  int64_t peak_used_bytes = 0;
  std::array<int64_t, kNumDeviceMemoryTags> used_bytes_by_tag{};
  std::array<int64_t, kNumDeviceMemoryTags> peak_bytes_by_tag{};
  int64_t num_chunks = 0;
  int64_t num_buffers = 0;  // live
  int64_t num_free_ranges = 0;
  int64_t largest_free_range_bytes = 0;

  int64_t used(DeviceMemoryTag tag) const { return used_bytes_by_tag[static_cast<int>(tag)]; }
  int64_t peak(DeviceMemoryTag tag) const { return peak_bytes_by_tag[static_cast<int>(tag)]; }
  // "used 1.2 GiB of 20.0 GiB (peak 1.5 GiB; weights 1.0 GiB, kv 200.0 MiB), reserved 1.5 GiB in 6
  // chunks"
  std::string to_string() const;
};

class DeviceArena {
 public:
  // invalid_argument when the options are invalid. Reserves nothing until the first allocate().
  static StatusOr<std::unique_ptr<DeviceArena>> create(const DeviceArenaOptions& options,
                                                       std::unique_ptr<DeviceAllocator> allocator);
  // REQUIRES: no live DeviceBuffer. Returns every chunk to the allocator.
  ~DeviceArena();
  DeviceArena(const DeviceArena&) = delete;
  DeviceArena& operator=(const DeviceArena&) = delete;

  // `size_bytes` (> 0) of device memory for `tag`, or:
  //   invalid_argument for size_bytes <= 0;
  //   out_of_memory naming the request, the tag, the budget and what is in use when it would
  //   take the arena past its budget (or the free space is too fragmented to fit it);
  //   the allocator's Status (e.g. cudaMalloc's) when the device itself refuses.
  StatusOr<DeviceBuffer> allocate(int64_t size_bytes, DeviceMemoryTag tag);

  // Returns wholly free chunks to the allocator; the bytes released.
  int64_t trim();

  DeviceArenaStats stats() const;
  int64_t budget_bytes() const { return options_.budget_bytes; }

 private:
  struct Chunk {
    std::byte* base = nullptr;
    int64_t size_bytes = 0;
    int64_t used_bytes = 0;
    std::map<int64_t, int64_t> free_ranges;  // offset -> size, ordered by address
  };
  // Best-fit index over every free range: (size, chunk id, offset), smallest first.
  using FreeKey = std::tuple<int64_t, int64_t, int64_t>;

  DeviceArena(const DeviceArenaOptions& options, std::unique_ptr<DeviceAllocator> allocator);

  // All REQUIRE mutex_ held.
  StatusOr<int64_t> add_chunk_locked(int64_t reserved_bytes, int64_t size_bytes,
                                     DeviceMemoryTag tag);
  void insert_free_locked(int64_t chunk_id, int64_t offset, int64_t size);
  void erase_free_locked(int64_t chunk_id, int64_t offset, int64_t size);
  int64_t trim_locked();
  DeviceArenaStats stats_locked() const;
  Status refusal_locked(int64_t size_bytes, DeviceMemoryTag tag, const std::string& why) const;

  friend class DeviceBuffer;
  void release(const DeviceBuffer& buffer);

  const DeviceArenaOptions options_;
  const std::unique_ptr<DeviceAllocator> allocator_;
  mutable std::mutex mutex_;
  std::map<int64_t, Chunk> chunks_;  // by id
  int64_t next_chunk_id_ = 0;
  std::set<FreeKey> free_by_size_;
  DeviceArenaStats stats_;  // counters kept up to date; the free-range fields are computed
};

}  // namespace strata
