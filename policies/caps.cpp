#include "policies/caps.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>

namespace strata {

double Caps::cpu_share_of_host_reads() const {
  if (host_combined_bytes_per_s <= 0) return 1.0;
  return std::clamp(
      (host_combined_bytes_per_s - h2d_pinned_bytes_per_s) / host_combined_bytes_per_s, 0.0, 1.0);
}

Caps Caps::reference() {
  Caps c;
  c.vram_free_bytes = int64_t{139} << 30;
  c.hbm_bytes_per_s = 4.50e12;         // gpu_e2e_bench read probe, 2026-12-01
  c.h2d_pinned_bytes_per_s = 52.6e9;   // BENCHMARKS.md
  c.h2d_pageable_bytes_per_s = 6.7e9;  // BENCHMARKS.md
  // Not measured on the reference machine yet: taken equal to the host-to-device figures.
  c.d2h_pinned_bytes_per_s = 52.6e9;
  c.d2h_pageable_bytes_per_s = 6.7e9;
  c.cpu_read_bytes_per_s = 79e9;        // BENCHMARKS.md (unpinned threads)
  c.host_combined_bytes_per_s = 108e9;  // BENCHMARKS.md
  c.gpu_gemm_flop_per_s = 7.0e14;       // cuBLAS f16 2048x14336x4096, 2026-12-01
  c.cpu_gemm_flop_per_s = 3.8e12;       // oneDNN bf16 on the 16-core host (bench/NOTES.md)
  c.source = "reference (the project's H200 machine, bench/NOTES.md)";
  return c;
}

namespace {

constexpr CapsField kCapsFields[] = {
    {"hbm_bytes_per_s", &Caps::hbm_bytes_per_s},
    {"h2d_pinned_bytes_per_s", &Caps::h2d_pinned_bytes_per_s},
    {"h2d_pageable_bytes_per_s", &Caps::h2d_pageable_bytes_per_s},
    {"d2h_pinned_bytes_per_s", &Caps::d2h_pinned_bytes_per_s},
    {"d2h_pageable_bytes_per_s", &Caps::d2h_pageable_bytes_per_s},
    {"cpu_read_bytes_per_s", &Caps::cpu_read_bytes_per_s},
    {"host_combined_bytes_per_s", &Caps::host_combined_bytes_per_s},
    {"gpu_gemm_flop_per_s", &Caps::gpu_gemm_flop_per_s},
    {"cpu_gemm_flop_per_s", &Caps::cpu_gemm_flop_per_s},
    {"cpu_gemv_efficiency_dense", &Caps::cpu_gemv_efficiency_dense},
    {"cpu_gemv_efficiency_4bit", &Caps::cpu_gemv_efficiency_4bit},
    {"gpu_gemv_efficiency_dense", &Caps::gpu_gemv_efficiency_dense},
    {"gpu_gemv_efficiency_8bit", &Caps::gpu_gemv_efficiency_8bit},
    {"gpu_gemv_efficiency_4bit", &Caps::gpu_gemv_efficiency_4bit},
};

}  // namespace

std::span<const CapsField> caps_fields() { return kCapsFields; }

nlohmann::json Caps::to_json() const {
  nlohmann::json j;
  j["source"] = source;
  j["vram_free_bytes"] = vram_free_bytes;
  for (const CapsField& f : kCapsFields) j[f.key] = this->*(f.rate);
  return j;
}

StatusOr<Caps> Caps::from_json(const nlohmann::json& j, const std::string& origin) {
  if (!j.is_object()) return Status::invalid_data(origin + ": not a JSON object");
  Caps c;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& key = it.key();
    if (key == "source") {
      if (!it->is_string()) return Status::invalid_data(origin + ": source: expected a string");
      c.source = it->get<std::string>();
      continue;
    }
    if (key == "vram_free_bytes") {
      if (!it->is_number_integer() || it->get<int64_t>() < 0) {
        return Status::invalid_data(origin + ": vram_free_bytes: expected a byte count");
      }
      c.vram_free_bytes = it->get<int64_t>();
      continue;
    }
    bool known = false;
    for (const CapsField& f : kCapsFields) {
      if (key != f.key) continue;
      known = true;
      if (!it->is_number() || !(it->get<double>() > 0)) {
        return Status::invalid_data(origin + ": " + key + ": expected a positive number");
      }
      c.*(f.rate) = it->get<double>();
    }
    if (!known) return Status::invalid_data(origin + ": " + key + ": unknown rate");
  }
  for (const CapsField& f : kCapsFields) {
    if (!j.contains(f.key)) return Status::invalid_data(origin + ": " + f.key + ": missing");
  }
  return c;
}

Status Caps::save(const std::string& path) const {
  std::error_code ec;
  const std::filesystem::path dir = std::filesystem::path(path).parent_path();
  if (!dir.empty()) std::filesystem::create_directories(dir, ec);
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    if (!out) return Status::io_error(tmp + ": cannot write");
    out << to_json().dump(1) << "\n";
    if (!out) return Status::io_error(tmp + ": write failed");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return Status::io_error(path + ": cannot rename " + tmp + " into place");
  }
  return Status::ok();
}

StatusOr<Caps> Caps::load(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::not_found(path + ": no calibration file");
  nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Status::invalid_data(path + ": not JSON");
  return from_json(j, path);
}

}  // namespace strata
