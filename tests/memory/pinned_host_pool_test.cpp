// PinnedHostPool with a recording fake pinner (LevelDB-style): pinned when the pinner agrees,
// pageable with one warning when it refuses, never a crash; the budget holds; every byte goes
// back to where it came from.
#include "memory/pinned_host_pool.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <set>

#include "tests/testing/expect_contains.h"

namespace strata {
namespace {

struct PinRecord {
  int64_t allocations = 0;
  int64_t frees = 0;
  int64_t refuse_after = -1;  // refuse once this many succeeded (-1: never)
  std::set<void*> live;
};

class FakePinner final : public HostPinner {
 public:
  explicit FakePinner(PinRecord* r) : r_(r) {}
  StatusOr<void*> allocate(int64_t size_bytes) override {
    if (r_->refuse_after >= 0 && r_->allocations >= r_->refuse_after) {
      return Status::out_of_memory("cudaMallocHost: out of memory (fake)");
    }
    ++r_->allocations;
    void* p = std::malloc(static_cast<size_t>(size_bytes));
    r_->live.insert(p);
    return p;
  }
  void free(void* data) override {
    ++r_->frees;
    EXPECT_EQ(r_->live.erase(data), 1u) << "freed memory the pinner did not give";
    std::free(data);
  }

 private:
  PinRecord* r_;
};

std::unique_ptr<PinnedHostPool> make_pool(PinRecord* r, PinnedHostPoolOptions o = {}) {
  auto pool = PinnedHostPool::create(o, r ? std::make_unique<FakePinner>(r) : nullptr);
  EXPECT_TRUE(pool.is_ok()) << pool.status().to_string();
  return std::move(pool).value();
}

TEST(PinnedHostPool, PinsWhenThePinnerAgrees) {
  PinRecord r;
  auto pool = make_pool(&r);
  {
    auto b = pool->allocate(1 << 20);
    ASSERT_TRUE(b.is_ok());
    EXPECT_TRUE(b->pinned());
    std::memset(b->data(), 1, 1 << 20);  // the memory is usable
    EXPECT_EQ(pool->stats().pinned_bytes, 1 << 20);
    EXPECT_EQ(pool->stats().pageable_bytes, 0);
  }
  EXPECT_EQ(r.frees, 1);
  EXPECT_TRUE(r.live.empty());
  EXPECT_EQ(pool->stats().pinned_bytes, 0);
  EXPECT_EQ(pool->stats().peak_bytes, 1 << 20);
  EXPECT_TRUE(pool->warning().empty());
}

TEST(PinnedHostPool, FallsBackToPageableWithOneWarningWhenPinningIsRefused) {
  PinRecord r;
  r.refuse_after = 1;
  auto pool = make_pool(&r);
  auto a = pool->allocate(4096);
  auto b = pool->allocate(int64_t{3} << 20);
  auto c = pool->allocate(8192);
  ASSERT_TRUE(a.is_ok() && b.is_ok() && c.is_ok());
  EXPECT_TRUE(a->pinned());
  EXPECT_FALSE(b->pinned());
  EXPECT_FALSE(c->pinned());
  std::memset(b->data(), 2, int64_t{3} << 20);
  EXPECT_EQ(pool->stats().num_pin_refusals, 2);
  EXPECT_EQ(pool->stats().pageable_bytes, (int64_t{3} << 20) + 8192);
  EXPECT_CONTAINS(pool->warning(), "pinning 0.00 GiB of host memory failed");
  EXPECT_CONTAINS(pool->warning(), "pageable speed");
  b->reset();  // pageable memory does not go back to the pinner
  EXPECT_EQ(r.frees, 0);
}

TEST(PinnedHostPool, RequirePinnedTurnsARefusalIntoAnError) {
  PinRecord r;
  r.refuse_after = 0;
  PinnedHostPoolOptions o;
  o.require_pinned = true;
  auto pool = make_pool(&r, o);
  auto b = pool->allocate(4096);
  ASSERT_FALSE(b.is_ok());
  EXPECT_EQ(b.status().code(), StatusCode::kOutOfMemory);
  EXPECT_CONTAINS(b.status().message(), "pinning");
  EXPECT_EQ(PinnedHostPool::create(o, nullptr).status().code(), StatusCode::kInvalidArgument);
}

TEST(PinnedHostPool, WithoutAPinnerEverythingIsPageableAndSilent) {
  auto pool = make_pool(nullptr);
  auto b = pool->allocate(4096);
  ASSERT_TRUE(b.is_ok());
  EXPECT_FALSE(b->pinned());
  EXPECT_TRUE(pool->warning().empty());
}

TEST(PinnedHostPool, TheBudgetHolds) {
  PinRecord r;
  PinnedHostPoolOptions o;
  o.budget_bytes = 10000;
  auto pool = make_pool(&r, o);
  auto a = pool->allocate(6000);
  ASSERT_TRUE(a.is_ok());
  auto b = pool->allocate(6000);
  ASSERT_FALSE(b.is_ok());
  EXPECT_EQ(b.status().code(), StatusCode::kOutOfMemory);
  EXPECT_CONTAINS(b.status().message(), "budget");
  a->reset();
  EXPECT_TRUE(pool->allocate(6000).is_ok());
  EXPECT_EQ(pool->allocate(0).status().code(), StatusCode::kInvalidArgument);
}

TEST(PinnedHostPool, MovedBuffersReleaseOnce) {
  PinRecord r;
  auto pool = make_pool(&r);
  auto a = pool->allocate(1000);
  ASSERT_TRUE(a.is_ok());
  HostBuffer moved = std::move(a).value();
  HostBuffer target;
  target = std::move(moved);
  EXPECT_TRUE(moved.empty());
  target.reset();
  target.reset();
  EXPECT_EQ(r.frees, 1);
}

}  // namespace
}  // namespace strata
