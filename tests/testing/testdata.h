// Where the golden data lives (../shared/testdata by default; CMake's STRATA_TESTDATA_DIR can
// point elsewhere) and a skip that names the path it looked at when the data is missing.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <string>

namespace strata::testing {

inline std::string testdata_dir() { return STRATA_TESTDATA_DIR; }
inline std::string testdata_path(const std::string& relative) {
  return testdata_dir() + "/" + relative;
}

}  // namespace strata::testing

// Skips the current test, naming the path, when a golden file or folder is not there.
#define STRATA_REQUIRE_TESTDATA(path_expr)                                  \
  do {                                                                      \
    const std::string strata_td_path_ = (path_expr);                        \
    if (!std::filesystem::exists(strata_td_path_)) {                        \
      GTEST_SKIP() << "golden data missing: looked for " << strata_td_path_ \
                   << " (set -DSTRATA_TESTDATA_DIR=...)";                   \
    }                                                                       \
  } while (0)
