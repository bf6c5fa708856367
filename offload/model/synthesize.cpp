#include "offload/model/synthesize.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <future>
#include <map>

#include "offload/core/quantize.h"
#include "offload/formats/gguf_file.h"

namespace strata {
namespace {

// ---- random numbers ---------------------------------------------------------------------------

constexpr uint64_t kGolden = 0x9e3779b97f4a7c15ull;

// splitmix64's finaliser: a bijective mix with full avalanche.
inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t fnv1a(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (char c : s) h = (h ^ static_cast<uint8_t>(c)) * 0x100000001b3ull;
  return h;
}

// Fills x[0..n) with approximately N(0, sigma): the sum of four 16-bit uniforms of one 64-bit
// word (Irwin-Hall, variance 1/3 before scaling). Counter-based, so element i depends only on
// (row_key, i) and the loop has no carried state.
void fill_normal(uint64_t row_key, float sigma, float* x, int64_t n) {
  const float scale = sigma * std::sqrt(3.0f);
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t w = mix64(row_key + static_cast<uint64_t>(i + 1) * kGolden);
    const uint32_t sum = static_cast<uint32_t>((w & 0xffff) + ((w >> 16) & 0xffff) +
                                               ((w >> 32) & 0xffff) + (w >> 48));
    x[i] = ((static_cast<float>(sum) + 2.0f) * (1.0f / 65536.0f) - 2.0f) * scale;
  }
}

// ---- tensor plan ------------------------------------------------------------------------------

enum class Init { kNormal, kOnes, kValues };

struct SynthTensor {
  GgufTensorDecl decl;
  Init init = Init::kNormal;
  float sigma = 0;
  std::vector<float> values;  // kValues: the one row
  uint64_t key = 0;           // mixes seed and name
  int64_t row_len = 0;
  int64_t num_rows = 0;
  uint64_t row_bytes = 0;
};

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// Tensors in the order llama.cpp's converter writes them: rope_freqs (llama3 scaling) first, then
// expected_tensors() with each qwen2 bias right after its weight.
std::vector<SynthTensor> plan_tensors(const SynthShape& shape, const HyperParams& hp, DType type,
                                      uint64_t seed) {
  std::vector<std::pair<std::string, std::vector<int64_t>>> order;
  std::vector<float> rope_freqs = llama3_rope_freqs(shape);
  if (!rope_freqs.empty()) {
    order.push_back({"rope_freqs.weight", {static_cast<int64_t>(rope_freqs.size())}});
  }
  auto expected = expected_tensors(shape.arch, hp);
  std::map<std::string, std::vector<int64_t>> biases;
  for (const auto& [name, ne] : expected) {
    if (ends_with(name, ".bias")) biases[name] = ne;
  }
  for (const auto& [name, ne] : expected) {
    if (ends_with(name, ".bias")) continue;
    order.push_back({name, ne});
    const std::string bias =
        name.substr(0, name.size() - std::string_view(".weight").size()) + ".bias";
    if (auto it = biases.find(bias); it != biases.end()) order.push_back({bias, it->second});
  }

  const float residual_scale = 1.0f / std::sqrt(2.0f * static_cast<float>(hp.n_layer));
  std::vector<SynthTensor> out;
  for (auto& [name, ne] : order) {
    SynthTensor t;
    t.decl = {name, synth_tensor_type(type, ne), ne};
    t.key = mix64(seed ^ mix64(fnv1a(name)));
    t.row_len = ne[0];
    t.num_rows = t.decl.num_elements() / ne[0];
    t.row_bytes = static_cast<uint64_t>(row_bytes(t.decl.type, t.row_len));
    const float fan_in = static_cast<float>(ne[0]);
    if (name == "rope_freqs.weight") {
      t.init = Init::kValues;
      t.values = rope_freqs;
    } else if (ends_with(name, "_norm.weight")) {
      t.init = Init::kOnes;
    } else if (ends_with(name, ".bias")) {
      t.sigma = 0.02f;
    } else if (name == "token_embd.weight") {
      t.sigma = 1.0f / std::sqrt(static_cast<float>(hp.n_embd));
    } else if (ends_with(name, "attn_output.weight") || ends_with(name, "ffn_down.weight")) {
      t.sigma = residual_scale / std::sqrt(fan_in);
    } else {
      t.sigma = 1.0f / std::sqrt(fan_in);
    }
    out.push_back(std::move(t));
  }
  return out;
}

// Generates row `row` of `t` as float32 into `x`, then stores it in t's type at `dst`.
Status fill_row(const SynthTensor& t, int64_t row, float* x, uint8_t* dst) {
  const int64_t n = t.row_len;
  switch (t.init) {
    case Init::kNormal:
      fill_normal(mix64(t.key + static_cast<uint64_t>(row) * kGolden), t.sigma, x, n);
      break;
    case Init::kOnes:
      std::fill(x, x + n, 1.0f);
      break;
    case Init::kValues:
      std::copy(t.values.begin(), t.values.end(), x);
      break;
  }
  // Every row's byte size is even (2-byte types, 34/18/144/210-byte blocks), so `dst` is aligned
  // for the 16-bit fields quantize_row stores.
  return quantize_row(t.decl.type, x, dst, n);
}

// A run of rows of one tensor inside a chunk buffer.
struct Piece {
  size_t tensor = 0;
  int64_t row_begin = 0, row_end = 0;
  size_t buffer_offset = 0;
};

// Cuts the next chunk of about `chunk_bytes` (at least one row) starting at (*tensor, *row).
size_t next_chunk(const std::vector<SynthTensor>& tensors, size_t chunk_bytes, size_t* tensor,
                  int64_t* row, std::vector<Piece>* pieces) {
  pieces->clear();
  size_t used = 0;
  while (*tensor < tensors.size()) {
    const SynthTensor& t = tensors[*tensor];
    const size_t room_rows = t.row_bytes == 0
                                 ? static_cast<size_t>(t.num_rows - *row)
                                 : (chunk_bytes - std::min(used, chunk_bytes)) / t.row_bytes;
    int64_t take = std::min<int64_t>(t.num_rows - *row, static_cast<int64_t>(room_rows));
    if (take == 0 && used == 0) take = 1;  // a row larger than the chunk still goes alone
    if (take == 0) break;
    pieces->push_back({*tensor, *row, *row + take, used});
    used += static_cast<size_t>(take) * t.row_bytes;
    *row += take;
    if (*row == t.num_rows) {
      ++*tensor;
      *row = 0;
    }
  }
  return used;
}

// Fills `buffer` with the rows of `pieces`, in parallel; rows are independent.
Status fill_chunk(const std::vector<SynthTensor>& tensors, const std::vector<Piece>& pieces,
                  int64_t max_row_len, int num_threads, uint8_t* buffer) {
  Status first_error;
  bool failed = false;
#pragma omp parallel num_threads(num_threads)
  {
    std::vector<float> scratch(static_cast<size_t>(max_row_len));
    for (const Piece& p : pieces) {
      const SynthTensor& t = tensors[p.tensor];
#pragma omp for schedule(static) nowait
      for (int64_t r = p.row_begin; r < p.row_end; ++r) {
        uint8_t* dst =
            buffer + p.buffer_offset + static_cast<size_t>(r - p.row_begin) * t.row_bytes;
        Status s = fill_row(t, r, scratch.data(), dst);
        if (!s.is_ok()) {
#pragma omp critical(strata_synth_error)
          if (!failed) {
            failed = true;
            first_error = Status(s.code(), "tensor '" + t.decl.name + "': " + s.message());
          }
        }
      }
    }
  }
  return first_error;
}

// ---- metadata ---------------------------------------------------------------------------------

GgufValue u32(int64_t v) { return GgufValue::integer(GgufType::kUint32, v); }
GgufValue f32(double v) { return GgufValue::floating(GgufType::kFloat32, v); }

void append_utf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xc0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else {
    out->push_back(static_cast<char>(0xe0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  }
}

// GPT-2's bytes_to_unicode(): printable bytes map to themselves, the others to 256, 257, ...
// Returns the 256 byte tokens in GPT-2's vocabulary order (printable bytes first).
std::vector<std::string> byte_tokens() {
  auto printable = [](int b) {
    return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  };
  std::vector<std::string> out;
  for (int b = 0; b < 256; ++b) {
    if (!printable(b)) continue;
    out.emplace_back();
    append_utf8(static_cast<uint32_t>(b), &out.back());
  }
  uint32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    if (printable(b)) continue;
    out.emplace_back();
    append_utf8(next++, &out.back());
  }
  return out;
}

GgufMetadata model_metadata(const SynthShape& shape, const HyperParams& hp, DType type) {
  const std::string a = arch_name(shape.arch);
  GgufMetadata md;
  md.push_back({"general.architecture", GgufValue::string(a)});
  md.push_back({"general.type", GgufValue::string("model")});
  md.push_back({"general.name", GgufValue::string(std::string("synth-") + shape.name)});
  md.push_back({a + ".block_count", u32(hp.n_layer)});
  md.push_back({a + ".context_length", u32(hp.n_ctx_train)});
  md.push_back({a + ".embedding_length", u32(hp.n_embd)});
  md.push_back({a + ".feed_forward_length", u32(hp.n_ff)});
  md.push_back({a + ".attention.head_count", u32(hp.n_head)});
  md.push_back({a + ".attention.head_count_kv", u32(hp.n_head_kv)});
  md.push_back({a + ".rope.freq_base", f32(hp.rope_theta)});
  md.push_back({a + ".attention.layer_norm_rms_epsilon", f32(hp.rms_eps)});
  const bool llama = shape.arch == Arch::kLlama;
  if (llama || hp.head_dim * hp.n_head != hp.n_embd) {
    md.push_back({a + ".attention.key_length", u32(hp.head_dim)});
    md.push_back({a + ".attention.value_length", u32(hp.head_dim)});
  }
  md.push_back({"general.file_type", u32(*llama_file_type(type))});
  if (llama) {
    md.push_back({a + ".vocab_size", u32(hp.n_vocab)});
    md.push_back({a + ".rope.dimension_count", u32(hp.rope_dims)});
  }
  return md;
}

std::string known_shapes() {
  std::string s;
  for (const SynthShape& sh : synth_shapes()) s += (s.empty() ? "" : ", ") + std::string(sh.name);
  return s;
}

}  // namespace

// ---- public helpers ---------------------------------------------------------------------------

StatusOr<DType> parse_synth_type(std::string_view name) {
  std::optional<DType> t = dtype_from_name(name);
  if (t && llama_file_type(*t)) return *t;
  return Status::invalid_argument("unknown --type '" + std::string(name) +
                                  "' (synth writes F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K)");
}

DType synth_tensor_type(DType requested, const std::vector<int64_t>& ne) {
  if (ne.size() < 2) return DType::kF32;
  const int64_t row = ne[0];
  DType t = requested;
  if (row % traits(t).block_elems != 0) {
    if (t == DType::kQ4_K) t = DType::kQ4_0;
    if (t == DType::kQ6_K) t = DType::kQ8_0;
  }
  if (row % traits(t).block_elems != 0) t = DType::kF16;
  return t;
}

std::optional<uint32_t> llama_file_type(DType type) {
  switch (type) {
    case DType::kF32:
      return 0;  // LLAMA_FTYPE_ALL_F32
    case DType::kF16:
      return 1;  // LLAMA_FTYPE_MOSTLY_F16
    case DType::kQ4_0:
      return 2;  // LLAMA_FTYPE_MOSTLY_Q4_0
    case DType::kQ8_0:
      return 7;  // LLAMA_FTYPE_MOSTLY_Q8_0
    case DType::kQ4_K:
      return 14;  // LLAMA_FTYPE_MOSTLY_Q4_K_S (Q4_K for every tensor)
    case DType::kQ6_K:
      return 18;  // LLAMA_FTYPE_MOSTLY_Q6_K
    case DType::kBF16:
      return 32;  // LLAMA_FTYPE_MOSTLY_BF16
    default:
      return std::nullopt;
  }
}

GgufMetadata synthetic_vocab(const SynthShape& shape, int64_t n_vocab) {
  int64_t bos = shape.bos_id, eos = shape.eos_id;
  if (bos < 256 || bos >= n_vocab || eos < 256 || eos >= n_vocab) {
    bos = 256;
    eos = shape.bos_id == shape.eos_id ? 256 : 257;
  }
  // A few merges of frequent English byte pairs ("Ġ" is the space byte), so that BPE tokenizers
  // (llama.cpp's, Strata's) that refuse an empty merge list accept the vocab and really merge.
  static const char* const kMerges[] = {"Ġ t", "Ġ a", "h e", "i n", "r e", "o n", "Ġ s", "e r",
                                        "a t", "n d", "o u", "e n", "Ġ w", "Ġ o", "Ġ c", "Ġ b",
                                        "i s", "o r", "e s", "i t", "Ġ f", "Ġ p", "a n", "a l",
                                        "Ġ m", "a r", "l e", "Ġ d", "Ġ h", "i c", "e d", "Ġ i"};
  std::vector<std::string> merges;
  std::vector<std::string> tokens = byte_tokens();
  std::vector<int64_t> types(256, 1);  // LLAMA_TOKEN_TYPE_NORMAL
  tokens.reserve(static_cast<size_t>(n_vocab));
  types.reserve(static_cast<size_t>(n_vocab));
  size_t next_merge = 0;
  for (int64_t id = 256; id < n_vocab; ++id) {
    if (id == bos && bos == eos) {
      tokens.push_back("<|endoftext|>");
      types.push_back(3);  // LLAMA_TOKEN_TYPE_CONTROL
    } else if (id == bos) {
      tokens.push_back("<|begin_of_text|>");
      types.push_back(3);
    } else if (id == eos) {
      tokens.push_back("<|end_of_text|>");
      types.push_back(3);
    } else if (next_merge < std::size(kMerges)) {
      std::string merge = kMerges[next_merge++];
      std::string merged = merge;
      merged.erase(merged.find(' '), 1);
      merges.push_back(std::move(merge));
      tokens.push_back(std::move(merged));
      types.push_back(1);
    } else {
      tokens.push_back("<|reserved_" + std::to_string(id) + "|>");
      types.push_back(3);
    }
  }
  GgufMetadata md;
  md.push_back({"tokenizer.ggml.model", GgufValue::string("gpt2")});
  md.push_back({"tokenizer.ggml.pre",
                GgufValue::string(shape.arch == Arch::kQwen2 ? "qwen2" : "llama-bpe")});
  md.push_back({"tokenizer.ggml.tokens", GgufValue::string_array(std::move(tokens))});
  md.push_back(
      {"tokenizer.ggml.token_type", GgufValue::int_array(GgufType::kInt32, std::move(types))});
  md.push_back({"tokenizer.ggml.merges", GgufValue::string_array(std::move(merges))});
  md.push_back({"tokenizer.ggml.bos_token_id", u32(bos)});
  md.push_back({"tokenizer.ggml.eos_token_id", u32(eos)});
  return md;
}

StatusOr<GgufMetadata> copy_vocab(const std::string& vocab_path, int64_t n_vocab,
                                  std::string_view shape_name) {
  auto file = GgufFile::open(vocab_path);
  if (!file.is_ok()) {
    return Status(file.status().code(), "--vocab: " + file.status().message());
  }
  const GgufValue* tokens = file->find("tokenizer.ggml.tokens");
  if (tokens == nullptr || tokens->strings() == nullptr) {
    return Status::invalid_argument("--vocab " + vocab_path +
                                    ": no tokenizer.ggml.tokens string array (not a vocab file?)");
  }
  const int64_t n_tokens = static_cast<int64_t>(tokens->array_size());
  if (n_tokens > n_vocab) {
    return Status::invalid_argument(
        "--vocab " + vocab_path + " has " + std::to_string(n_tokens) + " tokens, more than the " +
        std::to_string(n_vocab) + " rows of token_embd in shape '" + std::string(shape_name) + "'");
  }
  GgufMetadata md;
  for (const auto& [key, value] : file->metadata()) {
    if (key.rfind("tokenizer.", 0) != 0) continue;
    const bool per_token = value.is_array() && static_cast<int64_t>(value.array_size()) == n_tokens;
    if (n_tokens == n_vocab || !per_token) {
      md.push_back({key, value});
    } else if (key == "tokenizer.ggml.tokens") {
      std::vector<std::string> v = *value.strings();
      for (int64_t id = n_tokens; id < n_vocab; ++id)
        v.push_back("[PAD" + std::to_string(id) + "]");
      md.push_back({key, GgufValue::string_array(std::move(v))});
    } else if (key == "tokenizer.ggml.token_type" && value.ints() != nullptr) {
      std::vector<int64_t> v = *value.ints();
      v.resize(static_cast<size_t>(n_vocab), 5);  // LLAMA_TOKEN_TYPE_UNUSED
      md.push_back({key, GgufValue::int_array(value.array_type(), std::move(v))});
    } else if (key == "tokenizer.ggml.scores" && value.floats() != nullptr) {
      std::vector<double> v = *value.floats();
      v.resize(static_cast<size_t>(n_vocab), -1000.0);
      md.push_back({key, GgufValue::float_array(value.array_type(), std::move(v))});
    } else {
      return Status::unsupported("--vocab " + vocab_path + ": cannot pad per-token key " + key +
                                 " from " + std::to_string(n_tokens) + " to " +
                                 std::to_string(n_vocab) + " entries");
    }
  }
  return md;
}

// ---- synthesize -------------------------------------------------------------------------------

StatusOr<ModelSpec> synth_spec(std::string_view shape_name, DType type) {
  const SynthShape* shape = find_synth_shape(shape_name);
  if (shape == nullptr) {
    return Status::invalid_argument("--shape: no shape named '" + std::string(shape_name) +
                                    "' (strata synth --list shows them)");
  }
  STRATA_ASSIGN_OR_RETURN(const DType checked, parse_synth_type(dtype_name(type)));
  ModelSpec spec;
  spec.path = std::string("shape:") + shape->name;
  spec.arch = shape->arch;
  spec.name = shape->name;
  spec.hp = shape->hp;
  for (const SynthTensor& t : plan_tensors(*shape, shape->hp, checked, 0)) {
    TensorSpec ts;
    ts.name = t.decl.name;
    ts.type = t.decl.type;
    ts.ne = t.decl.ne;
    ts.size_bytes = t.row_bytes * static_cast<uint64_t>(t.num_rows);
    spec.tensor_index[ts.name] = spec.tensors.size();
    spec.tensors.push_back(std::move(ts));
  }
  return spec;
}

StatusOr<SynthResult> synthesize(const SynthOptions& options) {
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(Clock::now() - start).count(); };

  const SynthShape* shape = find_synth_shape(options.shape);
  if (shape == nullptr) {
    return Status::invalid_argument("unknown --shape '" + options.shape +
                                    "' (known: " + known_shapes() + "; see `strata synth --list`)");
  }
  if (!llama_file_type(options.type)) {
    return Status::invalid_argument(
        std::string("--type ") + dtype_name(options.type) +
        " is not one synth writes (F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K)");
  }
  if (options.out_path.empty()) return Status::invalid_argument("--out is required");
  if (options.n_layer < 0 || options.n_layer > 4096) {
    return Status::invalid_argument("--layers " + std::to_string(options.n_layer) +
                                    " must be between 1 and 4096");
  }
  HyperParams hp = shape->hp;
  if (options.n_layer > 0) hp.n_layer = options.n_layer;

  GgufMetadata md = model_metadata(*shape, hp, options.type);
  if (options.vocab_path.empty()) {
    for (auto& kv : synthetic_vocab(*shape, hp.n_vocab)) md.push_back(std::move(kv));
  } else {
    STRATA_ASSIGN_OR_RETURN(GgufMetadata vocab,
                            copy_vocab(options.vocab_path, hp.n_vocab, shape->name));
    for (auto& kv : vocab) md.push_back(std::move(kv));
  }
  md.push_back({"general.quantization_version", u32(2)});

  const std::vector<SynthTensor> tensors = plan_tensors(*shape, hp, options.type, options.seed);
  std::vector<GgufTensorDecl> decls;
  int64_t max_row_len = 0, num_params = 0;
  uint64_t max_row_bytes = 0;
  for (const SynthTensor& t : tensors) {
    decls.push_back(t.decl);
    max_row_len = std::max(max_row_len, t.row_len);
    max_row_bytes = std::max(max_row_bytes, t.row_bytes);
    num_params += t.decl.num_elements();
  }

  GgufWriterOptions wopt;
  wopt.sync_before_rename = options.sync_before_rename;
  STRATA_ASSIGN_OR_RETURN(
      std::unique_ptr<GgufWriter> writer,
      GgufWriter::create(options.out_path, std::move(md), std::move(decls), wopt));

  const int num_threads = options.num_threads > 0 ? options.num_threads : omp_get_max_threads();
  const size_t chunk_bytes = std::max<size_t>(options.chunk_bytes, 1);
  const size_t buffer_bytes = std::max<size_t>(chunk_bytes, max_row_bytes);
  // Two buffers: one filled while the other is written. Declared before `inflight`, whose
  // destructor waits for the write, so a buffer never dies under a running write.
  std::vector<uint8_t> buffers[2] = {std::vector<uint8_t>(buffer_bytes),
                                     std::vector<uint8_t>(buffer_bytes)};
  std::future<Status> inflight;

  auto report = [&]() -> Status {
    if (!options.on_progress) return Status::ok();
    SynthProgress p{writer->data_bytes_appended(), writer->data_bytes_total(), elapsed()};
    if (options.on_progress(p)) return Status::ok();
    return Status::io_error(options.out_path + ": cancelled; the file was not written");
  };
  auto wait_inflight = [&]() -> Status {
    if (!inflight.valid()) return Status::ok();
    STRATA_RETURN_IF_ERROR(inflight.get());
    return report();
  };

  size_t tensor = 0;
  int64_t row = 0;
  std::vector<Piece> pieces;
  for (int k = 0; tensor < tensors.size(); k ^= 1) {
    const size_t used = next_chunk(tensors, chunk_bytes, &tensor, &row, &pieces);
    STRATA_RETURN_IF_ERROR(
        fill_chunk(tensors, pieces, max_row_len, num_threads, buffers[k].data()));
    STRATA_RETURN_IF_ERROR(wait_inflight());
    std::span<const uint8_t> bytes(buffers[k].data(), used);
    GgufWriter* w = writer.get();
    inflight = std::async(std::launch::async, [w, bytes] { return w->append(bytes); });
  }
  STRATA_RETURN_IF_ERROR(wait_inflight());
  STRATA_RETURN_IF_ERROR(writer->finish());

  SynthResult result;
  result.file_bytes = writer->file_size_bytes();
  result.num_tensors = static_cast<int64_t>(tensors.size());
  result.num_params = num_params;
  result.seconds = elapsed();
  return result;
}

}  // namespace strata
