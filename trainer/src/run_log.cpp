// JSON-lines run log; see ddpm/trainer/run_log.h.
#include "ddpm/trainer/run_log.h"

#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>

namespace ddpm::trainer {

RunLog::RunLog(const std::string& path) : path_(path), file_(std::fopen(path.c_str(), "a")) {
  if (!file_) throw std::runtime_error(path + ": cannot open the run log for appending: " + std::strerror(errno));
}

RunLog::~RunLog() {
  if (file_) std::fclose(file_);
}

void RunLog::write(nlohmann::ordered_json record) {
  if (!record.contains("time")) {
    const auto now = std::chrono::system_clock::now().time_since_epoch();
    record["time"] = std::chrono::duration<double>(now).count();
  }
  // nlohmann::json writes NaN/inf as null already; replace=invalid UTF-8 rather than throw.
  const std::string line = record.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";
  if (std::fwrite(line.data(), 1, line.size(), file_) != line.size() || std::fflush(file_) != 0) {
    throw std::runtime_error(path_ + ": run log write failed: " + std::strerror(errno));
  }
}

}  // namespace ddpm::trainer
