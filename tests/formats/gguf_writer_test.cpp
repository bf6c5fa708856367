#include "offload/formats/gguf_writer.h"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>

#include "offload/formats/gguf_file.h"
#include "tests/testing/testdata.h"

namespace strata {
namespace {

namespace fs = std::filesystem;

// A fresh folder per test, removed afterwards.
class GgufWriterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(::testing::TempDir()) /
           ("strata_gguf_writer_" + std::string(info->name()) + "_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  fs::path dir_;
};

GgufWriterOptions fast_options() {
  GgufWriterOptions o;
  o.sync_before_rename = false;
  return o;
}

std::vector<uint8_t> random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

std::vector<uint8_t> read_all(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Writes `tensors` with `data[i]` as tensor i's bytes, appending in chunks of `chunk` bytes.
Status write_file(const std::string& p, GgufMetadata md, std::vector<GgufTensorDecl> tensors,
                  const std::vector<std::vector<uint8_t>>& data, size_t chunk) {
  STRATA_ASSIGN_OR_RETURN(auto w,
                          GgufWriter::create(p, std::move(md), std::move(tensors), fast_options()));
  std::vector<uint8_t> all;
  for (const auto& d : data) all.insert(all.end(), d.begin(), d.end());
  for (size_t at = 0; at < all.size(); at += chunk) {
    const size_t n = std::min(chunk, all.size() - at);
    STRATA_RETURN_IF_ERROR(w->append(std::span<const uint8_t>(all.data() + at, n)));
  }
  return w->finish();
}

TEST_F(GgufWriterTest, RoundTripsEveryValueTypeWithItsType) {
  GgufMetadata md = {
      {"t.u8", GgufValue::integer(GgufType::kUint8, 200)},
      {"t.i8", GgufValue::integer(GgufType::kInt8, -100)},
      {"t.u16", GgufValue::integer(GgufType::kUint16, 65000)},
      {"t.i16", GgufValue::integer(GgufType::kInt16, -32000)},
      {"t.u32", GgufValue::integer(GgufType::kUint32, 4000000000ll)},
      {"t.i32", GgufValue::integer(GgufType::kInt32, -2000000000)},
      {"t.f32", GgufValue::floating(GgufType::kFloat32, 1.25)},
      {"t.bool", GgufValue::boolean(true)},
      {"t.str", GgufValue::string("héllo\n")},
      {"t.u64", GgufValue::uint64(1ull << 40)},
      {"t.i64", GgufValue::integer(GgufType::kInt64, -(1ll << 50))},
      {"t.f64", GgufValue::floating(GgufType::kFloat64, 0.1)},
      {"a.u8", GgufValue::int_array(GgufType::kUint8, {0, 255, 7})},
      {"a.i8", GgufValue::int_array(GgufType::kInt8, {-128, 127})},
      {"a.u16", GgufValue::int_array(GgufType::kUint16, {1, 65535})},
      {"a.i16", GgufValue::int_array(GgufType::kInt16, {-1, 2})},
      {"a.u32", GgufValue::int_array(GgufType::kUint32, {3, 4294967295ll})},
      {"a.i32", GgufValue::int_array(GgufType::kInt32, {1, 2, 3, -4})},
      {"a.f32", GgufValue::float_array(GgufType::kFloat32, {0.5, -1000.0})},
      {"a.bool", GgufValue::int_array(GgufType::kBool, {1, 0, 1})},
      {"a.str", GgufValue::string_array({"a", "", "Ġb c"})},
      {"a.u64", GgufValue::uint64_array({0, ~0ull})},
      {"a.i64", GgufValue::int_array(GgufType::kInt64, {std::numeric_limits<int64_t>::min()})},
      {"a.f64", GgufValue::float_array(GgufType::kFloat64, {1e300, -0.1})},
      {"e.str", GgufValue::string_array({})},
      {"e.i32", GgufValue::int_array(GgufType::kInt32, {})},
      {"e.f32", GgufValue::float_array(GgufType::kFloat32, {})},
      {"e.u64", GgufValue::uint64_array({})},
  };
  const std::string p = path("values.gguf");
  ASSERT_TRUE(write_file(p, md, {}, {}, 1).is_ok());
  auto f = GgufFile::open(p);
  ASSERT_TRUE(f.is_ok()) << f.status().to_string();
  EXPECT_EQ(f->version(), 3u);
  ASSERT_EQ(f->metadata().size(), md.size());
  for (size_t i = 0; i < md.size(); ++i) {
    const auto& [key, want] = md[i];
    const auto& [got_key, got] = f->metadata()[i];
    SCOPED_TRACE(key);
    EXPECT_EQ(got_key, key);  // file order kept
    ASSERT_EQ(got.type(), want.type());
    if (want.is_array()) {
      ASSERT_EQ(got.array_type(), want.array_type());
      EXPECT_EQ(got.array_size(), want.array_size());
      if (want.ints()) {
        EXPECT_EQ(*got.ints(), *want.ints());
      }
      if (want.uints()) {
        EXPECT_EQ(*got.uints(), *want.uints());
      }
      if (want.strings()) {
        EXPECT_EQ(*got.strings(), *want.strings());
      }
      if (want.floats()) {
        ASSERT_NE(got.floats(), nullptr);
        for (size_t k = 0; k < want.floats()->size(); ++k) {
          const double w = (*want.floats())[k];
          const double expect = want.array_type() == GgufType::kFloat32 ? static_cast<float>(w) : w;
          EXPECT_EQ((*got.floats())[k], expect);
        }
      }
    } else if (want.to_string()) {
      EXPECT_EQ(*got.to_string(), *want.to_string());
    } else if (want.to_bool()) {
      EXPECT_EQ(got.to_bool(), want.to_bool());
    } else if (want.type() == GgufType::kFloat32) {
      EXPECT_EQ(*got.to_float(), static_cast<float>(*want.to_float()));
    } else if (want.type() == GgufType::kFloat64) {
      EXPECT_EQ(*got.to_float(), *want.to_float());
    } else {
      EXPECT_EQ(got.to_int(), want.to_int());
    }
  }
}

struct TensorCase {
  DType type;
  std::vector<int64_t> ne;
};

// Writes one tensor of each case with random bytes and checks names, types, shapes, offsets
// (multiples of the alignment) and bytes through GgufFile.
void expect_tensors_round_trip(const std::string& p, const std::vector<TensorCase>& cases,
                               std::optional<uint32_t> alignment, size_t chunk) {
  GgufMetadata md = {{"general.architecture", GgufValue::string("llama")}};
  if (alignment)
    md.push_back({"general.alignment", GgufValue::integer(GgufType::kUint32, *alignment)});
  std::vector<GgufTensorDecl> decls;
  std::vector<std::vector<uint8_t>> data;
  for (size_t i = 0; i < cases.size(); ++i) {
    std::string name = std::to_string(i);
    name += ".";
    name += dtype_name(cases[i].type);
    GgufTensorDecl d{name, cases[i].type, cases[i].ne};
    data.push_back(random_bytes(d.size_bytes(), static_cast<uint32_t>(i + 1)));
    decls.push_back(d);
  }
  Status s = write_file(p, md, decls, data, chunk);
  ASSERT_TRUE(s.is_ok()) << s.to_string();
  auto f = GgufFile::open(p);
  ASSERT_TRUE(f.is_ok()) << f.status().to_string();
  const uint64_t align = alignment.value_or(32);
  EXPECT_EQ(f->alignment(), align);
  EXPECT_EQ(f->data_offset() % align, 0u);
  EXPECT_EQ(f->file_size_bytes() % align, 0u);
  ASSERT_EQ(f->tensors().size(), decls.size());
  for (size_t i = 0; i < decls.size(); ++i) {
    const GgufTensorInfo& t = f->tensors()[i];
    SCOPED_TRACE(t.name);
    EXPECT_EQ(t.name, decls[i].name);
    EXPECT_EQ(t.type, decls[i].type);
    EXPECT_EQ(t.ne, decls[i].ne);
    EXPECT_EQ(t.offset % align, 0u);
    ASSERT_EQ(t.size_bytes, data[i].size());
    EXPECT_TRUE(std::equal(t.data.begin(), t.data.end(), data[i].begin()));
  }
}

const std::vector<TensorCase> kEveryType = {
    {DType::kF32, {7}},  // 28 bytes: the next tensor needs padding
    {DType::kF16, {3, 5}},   {DType::kBF16, {33, 2, 1}}, {DType::kQ8_0, {64, 3}},
    {DType::kQ4_0, {32, 5}}, {DType::kQ4_K, {256, 3}},   {DType::kQ6_K, {512, 1, 2, 1}},
    {DType::kF32, {1}},
};

TEST_F(GgufWriterTest, TensorsOfEverySupportedTypeWithDefaultAlignment32) {
  expect_tensors_round_trip(path("a32.gguf"), kEveryType, std::nullopt, 1 << 20);
}

TEST_F(GgufWriterTest, HonoursAlignment64) {
  expect_tensors_round_trip(path("a64.gguf"), kEveryType, 64, 1 << 20);
}

TEST_F(GgufWriterTest, ChunkBoundariesDoNotChangeTheFile) {
  const std::vector<TensorCase> cases = {
      {DType::kF32, {5}}, {DType::kQ8_0, {32, 9}}, {DType::kF16, {100}}};
  expect_tensors_round_trip(path("one.gguf"), cases, std::nullopt, 1);
  expect_tensors_round_trip(path("odd.gguf"), cases, std::nullopt, 37);
  expect_tensors_round_trip(path("big.gguf"), cases, std::nullopt, 1 << 20);
  EXPECT_EQ(read_all(path("one.gguf")), read_all(path("odd.gguf")));
  EXPECT_EQ(read_all(path("one.gguf")), read_all(path("big.gguf")));
}

TEST_F(GgufWriterTest, LargeAppendsBypassTheBuffer) {
  // Chunks larger than the write buffer go straight to the file; the result is the same.
  GgufWriterOptions o = fast_options();
  o.write_buffer_bytes = 64;
  const std::vector<uint8_t> bytes = random_bytes(4 * 1000, 9);
  auto w = GgufWriter::create(path("x.gguf"), {}, {{"a", DType::kF32, {1000}}}, o);
  ASSERT_TRUE(w.is_ok()) << w.status().to_string();
  ASSERT_TRUE((*w)->append(std::span<const uint8_t>(bytes.data(), 10)).is_ok());
  ASSERT_TRUE((*w)->append(std::span<const uint8_t>(bytes.data() + 10, bytes.size() - 10)).is_ok());
  ASSERT_TRUE((*w)->finish().is_ok());
  auto f = GgufFile::open(path("x.gguf"));
  ASSERT_TRUE(f.is_ok()) << f.status().to_string();
  EXPECT_TRUE(std::equal(f->tensors()[0].data.begin(), f->tensors()[0].data.end(), bytes.begin()));
  EXPECT_EQ(fs::file_size(path("x.gguf")), (*w)->file_size_bytes());
}

TEST_F(GgufWriterTest, ReportsLayoutBeforeWriting) {
  auto w = GgufWriter::create(path("x.gguf"), {},
                              {{"a", DType::kF32, {3}}, {"b", DType::kF16, {4}}}, fast_options());
  ASSERT_TRUE(w.is_ok());
  EXPECT_EQ((*w)->tensor_offsets(), (std::vector<uint64_t>{0, 32}));
  EXPECT_EQ((*w)->data_bytes_total(), 12u + 8u);
  EXPECT_EQ((*w)->file_size_bytes() - (*w)->data_offset(), 64u);
}

TEST_F(GgufWriterTest, TooFewBytesFailsAndLeavesNoFile) {
  const std::string p = path("short.gguf");
  auto w =
      GgufWriter::create(p, {}, {{"a", DType::kF32, {4}}, {"b", DType::kF32, {4}}}, fast_options());
  ASSERT_TRUE(w.is_ok());
  std::vector<uint8_t> bytes(20);
  ASSERT_TRUE((*w)->append(bytes).is_ok());
  EXPECT_TRUE(fs::exists(p + ".tmp"));
  Status s = (*w)->finish();
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("tensor 'b' got 4 of 16 bytes"), std::string::npos) << s.message();
  EXPECT_FALSE(fs::exists(p));
  EXPECT_FALSE(fs::exists(p + ".tmp"));
}

TEST_F(GgufWriterTest, TooManyBytesFails) {
  const std::string p = path("long.gguf");
  auto w = GgufWriter::create(p, {}, {{"a", DType::kF32, {4}}}, fast_options());
  ASSERT_TRUE(w.is_ok());
  std::vector<uint8_t> bytes(17);
  Status s = (*w)->append(bytes);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(fs::exists(p + ".tmp"));
  EXPECT_FALSE((*w)->finish().is_ok());  // the failure sticks
  EXPECT_FALSE(fs::exists(p));
}

TEST_F(GgufWriterTest, WriterDestroyedBeforeFinishKeepsTheOldFile) {
  const std::string p = path("keep.gguf");
  { std::ofstream(p) << "old contents"; }
  {
    auto w = GgufWriter::create(p, {}, {{"a", DType::kF32, {4}}}, fast_options());
    ASSERT_TRUE(w.is_ok());
    ASSERT_TRUE((*w)->append(std::vector<uint8_t>(8)).is_ok());
  }
  EXPECT_FALSE(fs::exists(p + ".tmp"));
  std::ifstream in(p);
  std::string got((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(got, "old contents");
}

TEST_F(GgufWriterTest, FinishReplacesAnExistingFile) {
  const std::string p = path("replace.gguf");
  { std::ofstream(p) << "old contents"; }
  ASSERT_TRUE(
      write_file(p, {}, {{"a", DType::kF32, {2}}}, {std::vector<uint8_t>(8, 1)}, 8).is_ok());
  EXPECT_TRUE(GgufFile::open(p).is_ok());
  EXPECT_FALSE(fs::exists(p + ".tmp"));
}

TEST_F(GgufWriterTest, UnwritablePathIsAnIoErrorNamingIt) {
  const std::string p = path("no/such/dir/x.gguf");
  auto w = GgufWriter::create(p, {}, {}, fast_options());
  ASSERT_FALSE(w.is_ok());
  EXPECT_EQ(w.status().code(), StatusCode::kIoError);
  EXPECT_NE(w.status().message().find(p + ".tmp"), std::string::npos) << w.status().message();
}

TEST_F(GgufWriterTest, WriteErrorRemovesTheTempFile) {
  // A file-size limit makes write(2) fail with EFBIG (SIGXFSZ ignored) part-way through the data.
  const std::string p = path("efbig.gguf");
  struct rlimit old_limit;
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old_limit), 0);
  auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  struct rlimit small = old_limit;
  small.rlim_cur = 64 * 1024;
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &small), 0);

  GgufWriterOptions o = fast_options();
  o.write_buffer_bytes = 4096;
  auto w = GgufWriter::create(p, {}, {{"big", DType::kF32, {1 << 20}}}, o);
  Status s = w.is_ok() ? Status::ok() : w.status();
  std::vector<uint8_t> chunk(1 << 16);
  for (int i = 0; s.is_ok() && i < 64; ++i) s = (*w)->append(chunk);
  if (s.is_ok()) s = (*w)->finish();

  setrlimit(RLIMIT_FSIZE, &old_limit);
  std::signal(SIGXFSZ, old_handler);
  EXPECT_EQ(s.code(), StatusCode::kIoError) << s.to_string();
  EXPECT_NE(s.message().find("cannot write"), std::string::npos) << s.message();
  EXPECT_FALSE(fs::exists(p));
  EXPECT_FALSE(fs::exists(p + ".tmp"));
}

TEST_F(GgufWriterTest, RejectsBadDeclarationsWithoutCreatingFiles) {
  const std::string p = path("bad.gguf");
  auto expect_bad = [&](GgufMetadata md, std::vector<GgufTensorDecl> t, const std::string& needle) {
    auto w = GgufWriter::create(p, std::move(md), std::move(t), fast_options());
    ASSERT_FALSE(w.is_ok()) << needle;
    EXPECT_EQ(w.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(w.status().message().find(needle), std::string::npos) << w.status().message();
    EXPECT_FALSE(fs::exists(p + ".tmp"));
  };
  const GgufValue one = GgufValue::integer(GgufType::kUint32, 1);
  expect_bad({{"k", one}, {"k", one}}, {}, "'k' is given twice");
  expect_bad({{"k", GgufValue::integer(GgufType::kUint8, 300)}}, {}, "does not fit uint8");
  expect_bad({{"k", GgufValue::int_array(GgufType::kInt8, {1, 200})}}, {}, "does not fit int8");
  expect_bad({{"general.alignment", GgufValue::integer(GgufType::kUint32, 48)}}, {},
             "power of two");
  expect_bad({{"general.alignment", GgufValue::integer(GgufType::kUint64, 64)}}, {}, "uint32");
  expect_bad({}, {{"a", DType::kF32, {1}}, {"a", DType::kF32, {1}}}, "declared twice");
  expect_bad({}, {{"a", DType::kQ8_0, {48}}}, "not a multiple of the Q8_0 block size 32");
  expect_bad({}, {{"a", DType::kF32, {1, 1, 1, 1, 1}}}, "5 dimensions");
  expect_bad({}, {{"a", DType::kF32, {}}}, "0 dimensions");
  expect_bad({}, {{std::string(64, 'n'), DType::kF32, {1}}}, "longer than 63 bytes");
}

// Reads a golden file (written by gguf-py conventions) and writes it back: metadata, tensor infos
// and data must come out byte for byte the same.
void expect_rewrite_is_identical(const std::string& golden, const std::string& out) {
  STRATA_REQUIRE_TESTDATA(golden);
  auto f = GgufFile::open(golden);
  ASSERT_TRUE(f.is_ok()) << f.status().to_string();
  std::vector<GgufTensorDecl> decls;
  for (const GgufTensorInfo& t : f->tensors()) decls.push_back({t.name, t.type, t.ne});
  auto w = GgufWriter::create(out, f->metadata(), decls, fast_options());
  ASSERT_TRUE(w.is_ok()) << w.status().to_string();
  for (const GgufTensorInfo& t : f->tensors()) ASSERT_TRUE((*w)->append(t.data).is_ok());
  ASSERT_TRUE((*w)->finish().is_ok());
  EXPECT_TRUE(read_all(out) == read_all(golden)) << "rewrite of " << golden << " differs";
}

TEST_F(GgufWriterTest, RewritesGoldenModelByteForByte) {
  expect_rewrite_is_identical(testing::testdata_path("models/tiny-llama/tiny-llama-F32.gguf"),
                              path("f32.gguf"));
}

TEST_F(GgufWriterTest, RewritesGoldenModelWithAlignment64ByteForByte) {
  expect_rewrite_is_identical(testing::testdata_path("models/tiny-llama/tiny-llama-BF16.gguf"),
                              path("bf16.gguf"));
}

TEST_F(GgufWriterTest, RewritesGoldenVocabWithoutTensorsByteForByte) {
  expect_rewrite_is_identical(testing::testdata_path("vocab/ggml-vocab-llama-bpe.gguf"),
                              path("vocab.gguf"));
}

}  // namespace
}  // namespace strata
