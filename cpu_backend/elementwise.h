// Elementwise and per-row CPU kernels of the Llama-family forward pass, float32 throughout.
// Activations are row-major [n_tokens][n]. All run OpenMP-parallel over rows (or rows x heads)
// and allocate nothing.
#pragma once

#include <cstdint>

#include "offload/model/model_spec.h"

namespace strata::cpu {

// y[t] = x[t] / sqrt(mean(x[t]^2) + eps) * weight, as HF's LlamaRMSNorm (x and y may alias).
void rms_norm(const float* x, const float* weight, float* y, int64_t n_tokens, int64_t n,
              float eps);

// Rotates the first rope_dims of every head of x [n_tokens][n_heads * head_dim] in place by the
// angle positions[t] * theta^(-2i/rope_dims) of pair i; pairs are adjacent elements or the two
// halves of the rotated part, per `style`.
void rope(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, int64_t rope_dims,
          const int32_t* positions, double theta, RopeStyle style);

// out = silu(gate) * up, elementwise over n values (out may alias gate). With AVX-512 the
// exponential is avx512_exp.h's (within a few ulp of expf; a scalar expf per value was ~6 ms a
// layer of a 2048-token 8B prefill on 16 threads).
void swiglu(const float* gate, const float* up, float* out, int64_t n);

// y[i] = f32_to_f16(x[i]) (round to nearest even), bit for bit, with F16C where the build has it.
// Not parallel: for rows inside a caller's parallel loop.
void to_f16(const float* x, uint16_t* y, int64_t n);

// y += x over n values.
void add_inplace(float* y, const float* x, int64_t n);

// y[t] += bias for every row t of y [n_tokens][n].
void add_bias(float* y, const float* bias, int64_t n_tokens, int64_t n);

}  // namespace strata::cpu
