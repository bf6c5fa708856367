// `strata convert`: an HF Llama checkpoint folder plus a vocab GGUF -> one standard llama GGUF,
// laid out as llama.cpp's convert_hf_to_gguf.py lays it out, so llama.cpp loads it as well.
//
//   strata convert --hf DIR --vocab VOCAB.gguf --out FILE.gguf [--type F16] [--name NAME]
//
// What the file holds:
//   - Metadata: general.{architecture, type, name, file_type, quantization_version}, the llama.*
//     hyper-parameter keys (block_count, context_length, embedding_length, feed_forward_length,
//     attention.head_count(_kv), rope.freq_base, attention.layer_norm_rms_epsilon,
//     attention.key/value_length, vocab_size, rope.dimension_count), and every tokenizer.* key of
//     VOCAB.gguf copied with its GGUF type (a vocab with fewer tokens than the checkpoint's
//     vocab_size is padded as HF converters pad; see copy_vocab in offload/model/synthesize.h).
//   - Tensors in llama.cpp's order and names (expected_tensors), ggml dims. Q and K rows are
//     permuted per head from HF's rotate-half layout to the adjacent pairs that llama's GGUF rope
//     expects: destination row h*hd + 2i + j takes source row h*hd + j*hd/2 + i
//     (LlamaModel.permute).
//   - Types as `llama-quantize --pure`: 2-D weights in --type (with synth_tensor_type's fallback
//     for rows that do not fit the block), norms F32. Each row is dequantized from the stored type
//     to float32 (exact for F32/F16/BF16) and quantized with quantize_row, so F32 output holds
//     the checkpoint's numbers bit for bit.
// The data streams row by row through a small buffer (memory is one chunk, not the model), and
// GgufWriter writes FILE.tmp and renames it, so FILE is never left half-written.
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "offload/cli/command.h"
#include "offload/core/dequantize.h"
#include "offload/core/quantize.h"
#include "offload/formats/gguf_writer.h"
#include "offload/model/model_loader.h"
#include "offload/model/synthesize.h"
#include "offload/tokenizer/tokenizer.h"

namespace strata::cli {
namespace {

struct ConvertArgs {
  std::string hf_dir;
  std::string vocab_path;
  std::string out_path;
  std::string type = "F16";
  std::string name;
};

GgufValue u32(int64_t v) { return GgufValue::integer(GgufType::kUint32, v); }
GgufValue f32(double v) { return GgufValue::floating(GgufType::kFloat32, v); }

StatusOr<DType> parse_type(const std::string& name) {
  std::optional<DType> t = dtype_from_name(name);
  if (t && llama_file_type(*t)) return *t;
  return Status::invalid_argument("unknown --type '" + name +
                                  "' (convert writes F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K)");
}

GgufMetadata llama_metadata(const HyperParams& hp, const std::string& name, DType type) {
  GgufMetadata md;
  md.push_back({"general.architecture", GgufValue::string("llama")});
  md.push_back({"general.type", GgufValue::string("model")});
  md.push_back({"general.name", GgufValue::string(name)});
  md.push_back({"llama.block_count", u32(hp.n_layer)});
  md.push_back({"llama.context_length", u32(hp.n_ctx_train)});
  md.push_back({"llama.embedding_length", u32(hp.n_embd)});
  md.push_back({"llama.feed_forward_length", u32(hp.n_ff)});
  md.push_back({"llama.attention.head_count", u32(hp.n_head)});
  md.push_back({"llama.attention.head_count_kv", u32(hp.n_head_kv)});
  md.push_back({"llama.rope.freq_base", f32(hp.rope_theta)});
  md.push_back({"llama.attention.layer_norm_rms_epsilon", f32(hp.rms_eps)});
  md.push_back({"llama.attention.key_length", u32(hp.head_dim)});
  md.push_back({"llama.attention.value_length", u32(hp.head_dim)});
  md.push_back({"general.file_type", u32(*llama_file_type(type))});
  md.push_back({"llama.vocab_size", u32(hp.n_vocab)});
  md.push_back({"llama.rope.dimension_count", u32(hp.rope_dims)});
  return md;
}

// True for attn_q / attn_k, whose rows llama's GGUF stores in the adjacent-pair rope layout.
bool has_rope_rows(std::string_view name) {
  return name.ends_with(".attn_q.weight") || name.ends_with(".attn_k.weight");
}

// Source row of destination row `row` under llama.cpp's Q/K permutation (head_dim rows a head).
int64_t source_row(int64_t row, int64_t head_dim) {
  const int64_t head = row / head_dim, within = row % head_dim;
  const int64_t pair = within / 2, side = within % 2;
  return head * head_dim + side * (head_dim / 2) + pair;
}

struct Converted {
  int64_t num_tensors = 0;
  int64_t num_params = 0;
  uint64_t file_bytes = 0;
};

StatusOr<Converted> convert(const ConvertArgs& args, DType type) {
  STRATA_ASSIGN_OR_RETURN(LoadedModel model, load_model(args.hf_dir));
  const ModelSpec& spec = model.spec;
  const HyperParams& hp = spec.hp;
  if (spec.format != SourceFormat::kSafetensors) {
    return Status::invalid_argument(
        "--hf " + args.hf_dir + ": expected an HF checkpoint folder (config.json + safetensors)");
  }
  if (spec.arch != Arch::kLlama) {
    return Status::unsupported("--hf " + args.hf_dir + ": architecture " + arch_name(spec.arch) +
                               " is not supported by convert (LlamaForCausalLM / Mistral only)");
  }
  if (hp.rope_dims != hp.head_dim || hp.head_dim % 2 != 0) {
    return Status::unsupported("--hf " + args.hf_dir + ": rope over " +
                               std::to_string(hp.rope_dims) + " of " + std::to_string(hp.head_dim) +
                               " head dims cannot be permuted to llama's GGUF layout");
  }

  // The vocabulary must build a tokenizer and fit the embedding.
  auto vocab_file = GgufFile::open(args.vocab_path);
  if (!vocab_file.is_ok()) {
    return Status(vocab_file.status().code(), "--vocab: " + vocab_file.status().message());
  }
  auto tokenizer = Tokenizer::from_gguf(*vocab_file);
  if (!tokenizer.is_ok()) {
    return Status(tokenizer.status().code(), "--vocab: " + tokenizer.status().message());
  }
  if (tokenizer->n_vocab() > hp.n_vocab) {
    return Status::invalid_argument("--vocab " + args.vocab_path + " has " +
                                    std::to_string(tokenizer->n_vocab()) +
                                    " tokens, more than the " + std::to_string(hp.n_vocab) +
                                    " rows of the checkpoint's embedding");
  }

  const std::string name = !args.name.empty() ? args.name : spec.name;
  GgufMetadata md = llama_metadata(hp, name, type);
  STRATA_ASSIGN_OR_RETURN(GgufMetadata vocab_md,
                          copy_vocab(args.vocab_path, hp.n_vocab, args.hf_dir));
  for (auto& kv : vocab_md) md.push_back(std::move(kv));
  md.push_back({"general.quantization_version", u32(2)});

  struct Job {
    const TensorSpec* source;
    GgufTensorDecl decl;
    bool permute_rows;  // Q/K: HF rotate-half rows -> llama.cpp adjacent pairs
  };
  std::vector<Job> jobs;
  std::vector<GgufTensorDecl> decls;
  Converted result;
  for (const auto& [tensor_name, ne] : expected_tensors(spec.arch, hp)) {
    const TensorSpec* source = spec.find(tensor_name);
    if (source == nullptr) return Status::internal("convert: the spec lacks '" + tensor_name + "'");
    GgufTensorDecl decl{tensor_name, synth_tensor_type(type, ne), ne};
    jobs.push_back({source, decl, has_rope_rows(tensor_name)});
    decls.push_back(decl);
    result.num_params += decl.num_elements();
  }
  result.num_tensors = static_cast<int64_t>(jobs.size());

  STRATA_ASSIGN_OR_RETURN(std::unique_ptr<GgufWriter> writer,
                          GgufWriter::create(args.out_path, std::move(md), std::move(decls)));
  constexpr size_t kChunkBytes = size_t{4} << 20;
  std::vector<uint8_t> chunk;
  std::vector<float> row_f32;
  for (const Job& job : jobs) {
    const TensorSpec& src = *job.source;
    const int64_t row_len = job.decl.ne[0];
    const int64_t num_rows = job.decl.num_elements() / row_len;
    const auto src_row_bytes = static_cast<size_t>(row_bytes(src.type, row_len));
    const auto dst_row_bytes = static_cast<size_t>(row_bytes(job.decl.type, row_len));
    if (src.data.size() != src_row_bytes * static_cast<size_t>(num_rows)) {
      return Status::invalid_data(spec.path + ": tensor '" + job.decl.name + "' holds " +
                                  std::to_string(src.data.size()) + " bytes, expected " +
                                  std::to_string(src_row_bytes * num_rows));
    }
    row_f32.resize(static_cast<size_t>(row_len));
    for (int64_t row = 0; row < num_rows; ++row) {
      const int64_t from = job.permute_rows ? source_row(row, hp.head_dim) : row;
      const uint8_t* src_row = src.data.data() + static_cast<size_t>(from) * src_row_bytes;
      Status s = dequantize_row(src.type, src_row, row_f32.data(), row_len);
      if (s.is_ok()) {
        chunk.resize(chunk.size() + dst_row_bytes);
        s = quantize_row(job.decl.type, row_f32.data(), chunk.data() + chunk.size() - dst_row_bytes,
                         row_len);
      }
      if (!s.is_ok()) return Status(s.code(), "tensor '" + job.decl.name + "': " + s.message());
      if (chunk.size() >= kChunkBytes) {
        STRATA_RETURN_IF_ERROR(writer->append(chunk));
        chunk.clear();
      }
    }
  }
  STRATA_RETURN_IF_ERROR(writer->append(chunk));
  STRATA_RETURN_IF_ERROR(writer->finish());
  result.file_bytes = writer->file_size_bytes();
  return result;
}

int run_convert(const ConvertArgs& args) {
  StatusOr<DType> type = parse_type(args.type);
  if (!type.is_ok()) return report_error("convert: " + type.status().message());
  StatusOr<Converted> result = convert(args, *type);
  if (!result.is_ok()) return report_error("convert: " + result.status().message());
  std::printf("wrote %s: llama, %s, %lld tensors, %.2fM params, %.2f MiB\n", args.out_path.c_str(),
              dtype_name(*type), static_cast<long long>(result->num_tensors),
              static_cast<double>(result->num_params) / 1e6,
              static_cast<double>(result->file_bytes) / (1 << 20));
  return 0;
}

}  // namespace

void add_convert_command(CLI::App& app, int* exit_code) {
  auto args = std::make_shared<ConvertArgs>();
  CLI::App* cmd = app.add_subcommand(
      "convert", "Convert an HF Llama checkpoint folder and a vocab GGUF into one llama GGUF file");
  cmd->add_option("--hf", args->hf_dir, "HF checkpoint folder (config.json + *.safetensors)")
      ->required();
  cmd->add_option("--vocab", args->vocab_path, "GGUF file whose tokenizer.* keys to copy")
      ->required();
  cmd->add_option("--out", args->out_path, "Output GGUF file (written via FILE.tmp, then renamed)")
      ->required();
  cmd->add_option("--type", args->type, "Weight type: F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K")
      ->default_val("F16");
  cmd->add_option("--name", args->name, "general.name (default: the checkpoint folder's name)");
  cmd->callback([args, exit_code] { *exit_code = run_convert(*args); });
}

}  // namespace strata::cli
