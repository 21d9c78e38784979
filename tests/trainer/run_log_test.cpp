// JSON-lines run log: one parsable object per line, appended across reopenings, flushed at once,
// non-finite numbers as null.
#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include "ddpm/trainer/run_log.h"
#include "testing/testing.h"

namespace {

std::vector<nlohmann::json> read_lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<nlohmann::json> out;
  for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line));
  return out;
}

TEST(RunLog, OneObjectPerLineAppendedAndFlushed) {
  const std::string path = ddpm::testing::temp_dir("run_log") + "/log.jsonl";
  {
    ddpm::trainer::RunLog log(path);
    log.write({{"step", 1}, {"loss", 0.5}});
    // Flushed: readable before the writer closes.
    const auto lines = read_lines(path);
    ASSERT_EQ(lines.size(), 1u);
    EXPECT_EQ(lines[0]["step"], 1);
    EXPECT_DOUBLE_EQ(lines[0]["loss"].get<double>(), 0.5);
    EXPECT_TRUE(lines[0]["time"].is_number());
    log.write({{"step", 2}, {"loss", std::nan("")}, {"time", 5.0}});
  }
  ddpm::trainer::RunLog again(path);  // a resumed run appends
  again.write({{"event", "resume"}, {"step", 2}});
  const auto lines = read_lines(path);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_TRUE(lines[1]["loss"].is_null());
  EXPECT_EQ(lines[1]["time"], 5.0);
  EXPECT_EQ(lines[2]["event"], "resume");
}

TEST(RunLog, UnwritablePathIsAClearError) {
  try {
    ddpm::trainer::RunLog log("/nonexistent-dir/log.jsonl");
    FAIL() << "opened";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent-dir/log.jsonl"), std::string::npos);
  }
}
}  // namespace
