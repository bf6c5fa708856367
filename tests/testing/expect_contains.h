// EXPECT_CONTAINS / ASSERT_CONTAINS: a substring check on a message that prints both strings
// when it fails (gmock is not linked, so there is no HasSubstr).
#pragma once

#include <gtest/gtest.h>

#include <string>

#define EXPECT_CONTAINS(haystack, needle)                          \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) \
      << "message: " << (haystack) << "\nexpected to contain: " << (needle)
#define ASSERT_CONTAINS(haystack, needle)                          \
  ASSERT_NE(std::string(haystack).find(needle), std::string::npos) \
      << "message: " << (haystack) << "\nexpected to contain: " << (needle)
