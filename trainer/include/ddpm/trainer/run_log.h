// JSON-lines run log: one JSON object per line, flushed after each, appended to across resumes
// (DIR/log.jsonl). Rank 0 writes it; `jq` and pandas.read_json(lines=True) read it.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdio>
#include <string>

namespace ddpm::trainer {

class RunLog {
 public:
  // Opens `path` for appending (creates it); throws std::runtime_error naming the path.
  explicit RunLog(const std::string& path);
  ~RunLog();
  RunLog(const RunLog&) = delete;
  RunLog& operator=(const RunLog&) = delete;

  // Writes `record` as one line, adding "time" (Unix seconds, float) when absent, then flushes.
  // Non-finite numbers are written as null (JSON has no NaN). Throws on a write error.
  void write(nlohmann::ordered_json record);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
};

}  // namespace ddpm::trainer
