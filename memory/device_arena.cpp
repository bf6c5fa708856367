#include "memory/device_arena.h"

#include <algorithm>
#include <cassert>
#include <cstdio>
#include <utility>

namespace strata {
namespace {

constexpr int64_t kAlign = kDeviceArenaAlignmentBytes;

int64_t round_up(int64_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; }

// "300.0 MiB (314572800 bytes)" style numbers without the byte count: "300.0 MiB", "512 bytes".
std::string human_bytes(int64_t bytes) {
  const char* units[] = {"bytes", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024.0 && unit < 4) {
    value /= 1024.0;
    ++unit;
  }
  char text[48];
  if (unit == 0) {
    std::snprintf(text, sizeof text, "%lld bytes", static_cast<long long>(bytes));
  } else {
    std::snprintf(text, sizeof text, "%.1f %s", value, units[unit]);
  }
  return text;
}

}  // namespace

const char* device_memory_tag_name(DeviceMemoryTag tag) {
  switch (tag) {
    case DeviceMemoryTag::kWeights:
      return "weights";
    case DeviceMemoryTag::kKv:
      return "kv";
    case DeviceMemoryTag::kStaging:
      return "staging";
    case DeviceMemoryTag::kActivations:
      return "activations";
    case DeviceMemoryTag::kWorkspace:
      return "workspace";
  }
  return "?";
}

Status DeviceArenaOptions::validate() const {
  if (budget_bytes <= 0) {
    return Status::invalid_argument("device arena: the VRAM budget must be positive, got " +
                                    std::to_string(budget_bytes) + " bytes");
  }
  if (chunk_bytes <= 0 || chunk_bytes % kAlign != 0) {
    return Status::invalid_argument("device arena: chunk_bytes must be a positive multiple of " +
                                    std::to_string(kAlign) + ", got " +
                                    std::to_string(chunk_bytes));
  }
  return Status::ok();
}

std::string DeviceArenaStats::to_string() const {
  std::string tags;
  for (int t = 0; t < kNumDeviceMemoryTags; ++t) {
    if (used_bytes_by_tag[t] == 0) continue;
    if (!tags.empty()) tags += ", ";
    tags += std::string(device_memory_tag_name(static_cast<DeviceMemoryTag>(t))) + " " +
            human_bytes(used_bytes_by_tag[t]);
  }
  return "used " + human_bytes(used_bytes) + " of " + human_bytes(budget_bytes) + " (peak " +
         human_bytes(peak_used_bytes) + (tags.empty() ? "" : "; " + tags) + "), reserved " +
         human_bytes(reserved_bytes) + " in " + std::to_string(num_chunks) + " chunks";
}

// ---- DeviceBuffer
// --------------------------------------------------------------------------------

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : arena_(std::exchange(other.arena_, nullptr)),
      data_(std::exchange(other.data_, nullptr)),
      size_bytes_(std::exchange(other.size_bytes_, 0)),
      reserved_bytes_(std::exchange(other.reserved_bytes_, 0)),
      chunk_id_(other.chunk_id_),
      offset_bytes_(other.offset_bytes_),
      tag_(other.tag_) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    reset();
    arena_ = std::exchange(other.arena_, nullptr);
    data_ = std::exchange(other.data_, nullptr);
    size_bytes_ = std::exchange(other.size_bytes_, 0);
    reserved_bytes_ = std::exchange(other.reserved_bytes_, 0);
    chunk_id_ = other.chunk_id_;
    offset_bytes_ = other.offset_bytes_;
    tag_ = other.tag_;
  }
  return *this;
}

void DeviceBuffer::reset() {
  if (arena_ != nullptr) arena_->release(*this);
  arena_ = nullptr;
  data_ = nullptr;
  size_bytes_ = 0;
  reserved_bytes_ = 0;
}

// ---- DeviceArena
// ---------------------------------------------------------------------------------

StatusOr<std::unique_ptr<DeviceArena>> DeviceArena::create(
    const DeviceArenaOptions& options, std::unique_ptr<DeviceAllocator> allocator) {
  STRATA_RETURN_IF_ERROR(options.validate());
  if (allocator == nullptr) return Status::invalid_argument("device arena: no allocator");
  return std::unique_ptr<DeviceArena>(new DeviceArena(options, std::move(allocator)));
}

DeviceArena::DeviceArena(const DeviceArenaOptions& options,
                         std::unique_ptr<DeviceAllocator> allocator)
    : options_(options), allocator_(std::move(allocator)) {
  stats_.budget_bytes = options.budget_bytes;
}

DeviceArena::~DeviceArena() {
  assert(stats_.num_buffers == 0 && "a DeviceBuffer outlived its DeviceArena");
  for (auto& [id, chunk] : chunks_) allocator_->free(chunk.base);
}

StatusOr<DeviceBuffer> DeviceArena::allocate(int64_t size_bytes, DeviceMemoryTag tag) {
  std::lock_guard lock(mutex_);
  if (size_bytes <= 0) {
    return Status::invalid_argument(std::string("device arena: cannot allocate ") +
                                    std::to_string(size_bytes) + " bytes for " +
                                    device_memory_tag_name(tag) + ": size must be positive");
  }
  if (size_bytes > options_.budget_bytes) {  // also keeps round_up from overflowing
    return refusal_locked(size_bytes, tag, "larger than the whole budget");
  }
  const int64_t reserved = round_up(size_bytes);

  // Best fit: the smallest free range that holds the request, lowest chunk and address on ties.
  auto fit = free_by_size_.lower_bound({reserved, INT64_MIN, INT64_MIN});
  int64_t chunk_id, offset;
  if (fit != free_by_size_.end()) {
    chunk_id = std::get<1>(*fit);
    offset = std::get<2>(*fit);
  } else {
    STRATA_ASSIGN_OR_RETURN(chunk_id, add_chunk_locked(reserved, size_bytes, tag));
    offset = 0;
  }

  Chunk& chunk = chunks_.at(chunk_id);
  const int64_t range_size = chunk.free_ranges.at(offset);
  erase_free_locked(chunk_id, offset, range_size);
  if (range_size > reserved) insert_free_locked(chunk_id, offset + reserved, range_size - reserved);
  chunk.used_bytes += reserved;

  const int t = static_cast<int>(tag);
  stats_.used_bytes += reserved;
  stats_.peak_used_bytes = std::max(stats_.peak_used_bytes, stats_.used_bytes);
  stats_.used_bytes_by_tag[t] += reserved;
  stats_.peak_bytes_by_tag[t] = std::max(stats_.peak_bytes_by_tag[t], stats_.used_bytes_by_tag[t]);
  ++stats_.num_buffers;

  DeviceBuffer buffer;
  buffer.arena_ = this;
  buffer.data_ = chunk.base + offset;
  buffer.size_bytes_ = size_bytes;
  buffer.reserved_bytes_ = reserved;
  buffer.chunk_id_ = chunk_id;
  buffer.offset_bytes_ = offset;
  buffer.tag_ = tag;
  return buffer;
}

StatusOr<int64_t> DeviceArena::add_chunk_locked(int64_t reserved, int64_t size_bytes,
                                                DeviceMemoryTag tag) {
  if (stats_.reserved_bytes + reserved > options_.budget_bytes) trim_locked();
  const int64_t budget_left = options_.budget_bytes - stats_.reserved_bytes;
  if (reserved > budget_left) {
    return refusal_locked(size_bytes, tag,
                          stats_.used_bytes + reserved <= options_.budget_bytes
                              ? "the free space is too fragmented to hold it"
                              : "it would exceed the budget");
  }
  // A full chunk when the budget allows, else what is left (never less than the request).
  const int64_t chunk_bytes = std::min(std::max(options_.chunk_bytes, reserved), budget_left);
  StatusOr<void*> base = allocator_->allocate(chunk_bytes);
  int64_t got_bytes = chunk_bytes;
  if (!base.is_ok() && chunk_bytes > reserved) {
    // The device may hold less than the budget (other processes); try the exact size once.
    trim_locked();
    base = allocator_->allocate(reserved);
    got_bytes = reserved;
  }
  if (!base.is_ok()) {
    return Status(base.status().code(), "device arena: cannot allocate " + human_bytes(size_bytes) +
                                            " (" + std::to_string(size_bytes) + " bytes) for " +
                                            device_memory_tag_name(tag) +
                                            ": the device refused: " + base.status().message() +
                                            "; arena " + stats_locked().to_string());
  }
  if (reinterpret_cast<uintptr_t>(*base) % kAlign != 0) {
    allocator_->free(*base);
    return Status::internal("device arena: the allocator returned an address not aligned to " +
                            std::to_string(kAlign) + " bytes");
  }
  const int64_t id = next_chunk_id_++;
  Chunk& chunk = chunks_[id];
  chunk.base = static_cast<std::byte*>(*base);
  chunk.size_bytes = got_bytes;
  insert_free_locked(id, 0, got_bytes);
  stats_.reserved_bytes += got_bytes;
  stats_.peak_reserved_bytes = std::max(stats_.peak_reserved_bytes, stats_.reserved_bytes);
  ++stats_.num_chunks;
  return id;
}

void DeviceArena::release(const DeviceBuffer& buffer) {
  std::lock_guard lock(mutex_);
  Chunk& chunk = chunks_.at(buffer.chunk_id_);
  int64_t offset = buffer.offset_bytes_;
  int64_t size = buffer.reserved_bytes_;
  chunk.used_bytes -= size;

  // Coalesce with the free neighbours on either side so that no two free ranges touch.
  auto next = chunk.free_ranges.lower_bound(offset);
  if (next != chunk.free_ranges.end() && next->first == offset + size) {
    const int64_t next_size = next->second;
    erase_free_locked(buffer.chunk_id_, next->first, next_size);
    size += next_size;
  }
  auto after = chunk.free_ranges.lower_bound(offset);
  if (after != chunk.free_ranges.begin()) {
    auto prev = std::prev(after);
    if (prev->first + prev->second == offset) {
      const int64_t prev_offset = prev->first, prev_size = prev->second;
      erase_free_locked(buffer.chunk_id_, prev_offset, prev_size);
      offset = prev_offset;
      size += prev_size;
    }
  }
  insert_free_locked(buffer.chunk_id_, offset, size);

  const int t = static_cast<int>(buffer.tag_);
  stats_.used_bytes -= buffer.reserved_bytes_;
  stats_.used_bytes_by_tag[t] -= buffer.reserved_bytes_;
  --stats_.num_buffers;
}

void DeviceArena::insert_free_locked(int64_t chunk_id, int64_t offset, int64_t size) {
  chunks_.at(chunk_id).free_ranges.emplace(offset, size);
  free_by_size_.emplace(size, chunk_id, offset);
}

void DeviceArena::erase_free_locked(int64_t chunk_id, int64_t offset, int64_t size) {
  chunks_.at(chunk_id).free_ranges.erase(offset);
  free_by_size_.erase({size, chunk_id, offset});
}

int64_t DeviceArena::trim() {
  std::lock_guard lock(mutex_);
  return trim_locked();
}

int64_t DeviceArena::trim_locked() {
  int64_t released = 0;
  for (auto it = chunks_.begin(); it != chunks_.end();) {
    Chunk& chunk = it->second;
    if (chunk.used_bytes != 0) {
      ++it;
      continue;
    }
    erase_free_locked(it->first, 0, chunk.size_bytes);  // a free chunk is one coalesced range
    allocator_->free(chunk.base);
    released += chunk.size_bytes;
    stats_.reserved_bytes -= chunk.size_bytes;
    --stats_.num_chunks;
    it = chunks_.erase(it);
  }
  return released;
}

DeviceArenaStats DeviceArena::stats() const {
  std::lock_guard lock(mutex_);
  return stats_locked();
}

DeviceArenaStats DeviceArena::stats_locked() const {
  DeviceArenaStats stats = stats_;
  stats.num_free_ranges = static_cast<int64_t>(free_by_size_.size());
  stats.largest_free_range_bytes = free_by_size_.empty() ? 0 : std::get<0>(*free_by_size_.rbegin());
  return stats;
}

Status DeviceArena::refusal_locked(int64_t size_bytes, DeviceMemoryTag tag,
                                   const std::string& why) const {
  const DeviceArenaStats stats = stats_locked();
  return Status::out_of_memory(
      "device arena: cannot allocate " + human_bytes(size_bytes) + " (" +
      std::to_string(size_bytes) + " bytes) for " + device_memory_tag_name(tag) + ": " + why +
      " (VRAM budget " + human_bytes(stats.budget_bytes) + "); " + stats.to_string() +
      ", largest free range " + human_bytes(stats.largest_free_range_bytes));
}

}  // namespace strata
