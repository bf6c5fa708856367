#include "offload/formats/gguf_file.h"

#include <gtest/gtest.h>

#include "tests/testing/testdata.h"

namespace strata {
namespace {

TEST(GgufFile, ReadsTinyLlamaHeader) {
  const std::string path = testing::testdata_path("models/tiny-llama/tiny-llama-F32.gguf");
  STRATA_REQUIRE_TESTDATA(path);
  auto f = GgufFile::open(path);
  ASSERT_TRUE(f.is_ok()) << f.status().to_string();
  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(f->get_string("general.architecture"), "llama");
  EXPECT_EQ(f->get_int("llama.block_count"), 3);
  const GgufTensorInfo* emb = f->find_tensor("token_embd.weight");
  ASSERT_NE(emb, nullptr);
  EXPECT_EQ(emb->ne, (std::vector<int64_t>{32, 32000}));
}

}  // namespace
}  // namespace strata
