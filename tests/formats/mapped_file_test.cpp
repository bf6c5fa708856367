// MappedFile when the file changes under the mapping (offload/formats/mapped_file.h): deleted, it
// stays readable; truncated, a read past the new end ends the process with one clear line and
// kMappedFileTruncatedExitCode, not a crash; a SIGBUS elsewhere is not swallowed.
#include "offload/formats/mapped_file.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <fstream>
#include <random>
#include <vector>

namespace strata {
namespace {

std::string temp_file(const std::vector<uint8_t>& bytes) {
  char name[] = "/tmp/strata-mapped-XXXXXX";
  const int fd = ::mkstemp(name);
  EXPECT_GE(fd, 0);
  EXPECT_EQ(::write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  ::close(fd);
  return name;
}

std::vector<uint8_t> random_bytes(size_t n) {
  std::mt19937 rng(std::random_device{}());
  std::vector<uint8_t> v(n);
  for (uint8_t& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

TEST(MappedFile, DeletedWhileMappedStaysReadable) {
  const std::vector<uint8_t> bytes = random_bytes(1 << 16);
  const std::string path = temp_file(bytes);
  auto file = MappedFile::open(path);
  ASSERT_TRUE(file.is_ok()) << file.status().to_string();
  ASSERT_EQ(::unlink(path.c_str()), 0);
  const std::span<const uint8_t> mapped = (*file)->bytes();
  ASSERT_EQ(mapped.size(), bytes.size());
  EXPECT_TRUE(std::equal(mapped.begin(), mapped.end(), bytes.begin()));
}

TEST(MappedFileDeathTest, TruncatedWhileMappedExitsWithOneClearLine) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const std::string path = temp_file(random_bytes(1 << 16));
  EXPECT_EXIT(
      {
        auto file = MappedFile::open(path);
        if (!file.is_ok()) std::_Exit(10);
        if (::truncate(path.c_str(), 0) != 0) std::_Exit(11);
        const volatile uint8_t* p = (*file)->bytes().data();
        std::printf("%d\n", p[40000]);  // past the new end: SIGBUS
        std::_Exit(12);
      },
      ::testing::ExitedWithCode(kMappedFileTruncatedExitCode),
      "strata: /tmp/strata-mapped-.* was truncated while mapped");
  ::unlink(path.c_str());
}

TEST(MappedFileDeathTest, OtherBusErrorsAreNotSwallowed) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const std::string path = temp_file(random_bytes(4096));
  auto file = MappedFile::open(path);  // the handler is installed
  ASSERT_TRUE(file.is_ok());
  EXPECT_DEATH(::raise(SIGBUS), "");
  ::unlink(path.c_str());
}

}  // namespace
}  // namespace strata
