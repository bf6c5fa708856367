// check(): the benchmarks' one error policy. A failed setup step ends the run with one line
// naming the benchmark and the step; a benchmark that half-ran would print figures that lie.
#pragma once

#include <cerrno>  // program_invocation_short_name (glibc)
#include <cstdio>
#include <cstdlib>
#include <utility>

#include "offload/core/status.h"

namespace strata::bench {

inline void check(const Status& s, const char* what) {
  if (!s.is_ok()) {
    std::fprintf(stderr, "%s: %s: %s\n", program_invocation_short_name, what,
                 s.to_string().c_str());
    std::exit(1);
  }
}

template <typename T>
T check(StatusOr<T> v, const char* what) {
  check(v.status(), what);
  return std::move(v).value();
}

}  // namespace strata::bench
