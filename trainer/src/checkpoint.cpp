// The checkpoint store of a run dir: atomic save (temp folder, fsync, rename), the `latest`
// pointer, retention and resume with fallback; see ddpm/trainer/checkpoint.h.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <set>

#include "ddpm/data/files.h"
#include "ddpm/trainer/checkpoint.h"

namespace ddpm::trainer {

namespace fs = std::filesystem;

namespace {

bool is_step_name(const std::string& s) {
  return s.size() >= 6 && s.size() <= 18 && s.find_first_not_of("0123456789") == std::string::npos;
}

void rename_or_throw(const fs::path& from, const fs::path& to) {
  if (std::rename(from.c_str(), to.c_str()) != 0) {
    throw std::runtime_error("checkpoint: rename " + from.string() + " -> " + to.string() +
                             " failed: " + std::strerror(errno));
  }
}

// ".tmp-<step>-<pid>" / ".trash-<step>-<pid>" / "latest.tmp-<pid>" -> pid, or -1.
long temporary_owner(const std::string& name) {
  if (name.rfind(".tmp-", 0) != 0 && name.rfind(".trash-", 0) != 0 && name.rfind("latest.tmp-", 0) != 0) return -1;
  const auto dash = name.rfind('-');
  const std::string pid = name.substr(dash + 1);
  if (pid.empty() || pid.find_first_not_of("0123456789") != std::string::npos) return -1;
  return std::stol(pid);
}

}  // namespace

std::vector<int64_t> checkpoints_to_delete(std::vector<int64_t> steps, const RetentionPolicy& p) {
  std::sort(steps.begin(), steps.end());
  std::vector<int64_t> out;
  if (p.keep_last <= 0 || steps.empty()) return out;
  const size_t n = steps.size();
  const size_t keep_from = n > static_cast<size_t>(p.keep_last) ? n - static_cast<size_t>(p.keep_last) : 0;
  for (size_t i = 0; i < keep_from; ++i) {
    const bool milestone = p.keep_every > 0 && steps[i] % p.keep_every == 0;
    if (!milestone) out.push_back(steps[i]);
  }
  return out;
}

CheckpointStore::CheckpointStore(std::string run_dir, RetentionPolicy retention)
    : dir_((fs::path(run_dir) / "checkpoints").string()), retention_(retention) {}

std::string CheckpointStore::path_for(int64_t step) const { return (fs::path(dir_) / checkpoint_name(step)).string(); }

void CheckpointStore::remove_stale_temporaries() const {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir_, ec)) {
    const long pid = temporary_owner(e.path().filename().string());
    if (pid < 0) continue;
    const bool alive = pid != ::getpid() && (::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM);
    if (!alive) fs::remove_all(e.path(), ec);
  }
}

std::string CheckpointStore::save(const TrainState& state) {
  if (state.step < 0) throw std::invalid_argument("checkpoint: negative step " + std::to_string(state.step));
  fs::create_directories(dir_);
  remove_stale_temporaries();
  const std::string name = checkpoint_name(state.step);
  const std::string pid = std::to_string(::getpid());
  const fs::path tmp = fs::path(dir_) / (".tmp-" + name + "-" + pid);
  const fs::path final_dir = fs::path(dir_) / name;
  try {
    fs::remove_all(tmp);
    fs::create_directory(tmp);
    write_checkpoint_files(tmp.string(), state);
    point("files_written");
    data::fsync_path(dir_);
  } catch (const std::exception& e) {
    // Disk full, a quota or file-size limit, an I/O error: drop the partial folder (it would never
    // be loaded: no final name, no verified manifest) and say what is left to resume from.
    std::error_code ec;
    fs::remove_all(tmp, ec);
    const std::optional<int64_t> previous = latest_pointer();
    throw CheckpointError(
        "checkpoint of step " + std::to_string(state.step) + " not written: " + e.what() + "; " +
        (previous ? "the previous checkpoint " + path_for(*previous) + " is intact. Free space in " + dir_ +
                        " (or raise the quota or `ulimit -f`) and run the same command to resume from step " +
                        std::to_string(*previous)
                  : "no earlier checkpoint exists. Free space in " + dir_ + " (or raise the quota or `ulimit -f`) "
                    "and run the same command"));
  }
  point("before_rename");
  if (fs::exists(final_dir)) {  // an older write of this step (e.g. one that failed to verify)
    const fs::path trash = fs::path(dir_) / (".trash-" + name + "-" + pid);
    fs::remove_all(trash);
    rename_or_throw(final_dir, trash);
    rename_or_throw(tmp, final_dir);
    data::fsync_path(dir_);
    fs::remove_all(trash);
  } else {
    rename_or_throw(tmp, final_dir);
    data::fsync_path(dir_);
  }
  point("after_rename");
  data::write_file_atomic((fs::path(dir_) / "latest").string(), name + "\n");
  point("latest_written");
  std::error_code ec;
  for (int64_t step : checkpoints_to_delete(list_steps(), retention_)) {
    if (step != state.step) fs::remove_all(path_for(step), ec);  // best effort: extra files are harmless
  }
  return final_dir.string();
}

std::vector<int64_t> CheckpointStore::list_steps() const {
  std::vector<int64_t> steps;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir_, ec)) {
    const std::string n = e.path().filename().string();
    if (e.is_directory() && is_step_name(n)) steps.push_back(std::stoll(n));
  }
  std::sort(steps.begin(), steps.end());
  return steps;
}

std::optional<int64_t> CheckpointStore::latest_pointer() const {
  const fs::path p = fs::path(dir_) / "latest";
  if (!fs::exists(p)) return std::nullopt;
  std::string text = data::read_file(p.string());
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  if (!is_step_name(text)) return std::nullopt;
  return std::stoll(text);
}

CheckpointStore::Resumed CheckpointStore::resume(const std::string& spec) const {
  Resumed out;
  if (spec == "none") return out;
  if (spec != "auto") {
    if (fs::exists(fs::path(spec) / "MANIFEST.json") || !fs::exists(fs::path(spec) / "checkpoints")) {
      if (!fs::is_directory(spec)) throw CheckpointError("--resume " + spec + ": no such checkpoint folder");
      out.state = load_checkpoint(spec);
      out.path = spec;
      return out;
    }
    return CheckpointStore(spec, retention_).resume("auto");
  }
  std::vector<int64_t> steps = list_steps();
  std::string failures;
  for (auto it = steps.rbegin(); it != steps.rend(); ++it) {
    const std::string path = path_for(*it);
    try {
      out.state = load_checkpoint(path);
      out.path = path;
      return out;
    } catch (const std::exception& e) {
      out.warnings.push_back(std::string("skipping ") + e.what() + "; trying an older checkpoint");
      failures += std::string("\n  ") + e.what();
    }
  }
  if (!steps.empty()) {
    throw CheckpointError("--resume auto: none of the " + std::to_string(steps.size()) + " checkpoints in " + dir_ +
                          " verifies:" + failures + "\nRestore them, resume from a copy with --resume PATH, "
                          "or start over in a new --run-dir");
  }
  return out;
}

}  // namespace ddpm::trainer
