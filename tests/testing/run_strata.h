// Runs the built `strata` binary with a command line and captures what it printed, for the CLI
// end-to-end tests; plus the check every "bad input" test makes: a non-zero exit that is not a
// crash, and one message naming what was wrong.
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>

namespace strata::testing {

struct StrataResult {
  int exit_code = -1;  // 128 + signal number when the process was killed by a signal
  std::string output;  // stdout and stderr together
};

// `args` is pasted into a shell command line after the binary's path: quote as the shell needs.
inline StrataResult run_strata(const std::string& args) {
  const std::string cmd = std::string(STRATA_BINARY_DIR) + "/strata " + args + " 2>&1";
  StrataResult r;
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.output.append(buf.data(), n);
  const int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

// Failed cleanly (non-zero exit, no crash) and the output mentions `what`.
inline void expect_clear_error(const StrataResult& r, const std::string& what) {
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_LT(r.exit_code, 128) << "crashed: " << r.output;
  EXPECT_NE(r.output.find(what), std::string::npos) << r.output;
}

}  // namespace strata::testing
