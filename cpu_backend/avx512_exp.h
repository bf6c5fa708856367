// e^x on AVX-512 for the softmax of attention scores less their running max (x <= 0), shared by
// the CPU attention (attention.cpp) and the AMX prefill attention (attention_amx_tiles.cpp).
// Internal linkage: the two are built with different flags (see amx_tiles.h), so each keeps its own
// copy.
#pragma once

#if defined(__AVX512F__)
#include <immintrin.h>

namespace strata::cpu {
namespace {

// e^x for x <= 0 (a score less its running max), 16 at a time: x = n ln2 + r with |r| <= ln2 / 2,
// e^r by its Taylor series to r^7 (truncation below 1e-8 relative there), times 2^n (scalef).
// Below -87 it underflows to 0 as expf does. One scalar expf per score and head was a fifth of
// the CPU attention's time.
inline __m512 exp_nonpositive(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-104.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);  // ln2, high bits
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.42860682030941723e-6f), r);    // and the rest
  // A plain array, not an initializer_list: this header reaches the AMX-flagged files, which
  // must not instantiate any shared library inline function.
  constexpr float kTaylor[] = {1.0f / 720.0f, 1.0f / 120.0f, 1.0f / 24.0f, 1.0f / 6.0f,
                               0.5f,          1.0f,          1.0f};
  __m512 e = _mm512_set1_ps(1.0f / 5040.0f);
  for (const float c : kTaylor) e = _mm512_fmadd_ps(e, r, _mm512_set1_ps(c));
  return _mm512_scalef_ps(e, n);
}

}  // namespace
}  // namespace strata::cpu
#endif
