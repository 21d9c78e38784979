// The files of one checkpoint folder: writing them with a manifest, verifying and reading them
// back; see ddpm/trainer/checkpoint.h. The store (atomic rename, latest, pruning) is checkpoint.cpp.
#include <ATen/ATen.h>

#include <cstdio>
#include <filesystem>

#include "ddpm/data/files.h"
#include "ddpm/trainer/checkpoint.h"
#include "ddpm/trainer/ema.h"
#include "fs_util.h"

namespace ddpm::trainer {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

std::string checkpoint_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%06lld", static_cast<long long>(step));
  return buf;
}

std::string ema_file_name(double rate) { return "ema_" + EmaSet::rate_name(rate) + ".pt"; }

namespace {

model::TensorDict pack_state_tensors(const TrainState& s) {
  model::TensorDict out;
  for (const auto& [name, t] : s.sampler) out.emplace_back("sampler/" + name, t);
  out.emplace_back("data_cursor", at::tensor(std::vector<int64_t>(s.data_cursor), at::kLong));
  for (size_t r = 0; r < s.rng.size(); ++r) append_rng_state(out, "rng/rank" + std::to_string(r), s.rng[r]);
  return out;
}

Json state_json(const TrainState& s) {
  Json rates = Json::array();
  for (const auto& [rate, dict] : s.emas) rates.push_back(rate);
  return Json{{"format_version", kCheckpointFormatVersion},
              {"step", s.step},
              {"images_seen", s.images_seen},
              {"lr", s.lr},
              {"loss_scale", s.loss_scale},
              {"loss_scale_good_steps", s.loss_scale_good_steps},
              {"nonfinite_in_row", s.nonfinite_in_row},
              {"nonfinite_total", s.nonfinite_total},
              {"world_size", s.world_size},
              {"rng_ranks", s.rng.size()},
              {"ema_rates", rates},
              {"config", s.config},
              {"extra", s.extra}};
}

void save_dict(const std::string& dir, const std::string& name, const model::TensorDict& d,
               std::vector<std::string>& files) {
  model::save_tensor_dict(dir + "/" + name, d);
  data::fsync_path(dir + "/" + name);
  files.push_back(name);
}

[[noreturn]] void broken(const std::string& dir, const std::string& what) {
  throw CheckpointError("checkpoint " + dir + ": " + what);
}

template <typename T>
T get(const Json& j, const char* key, const std::string& dir) {
  if (!j.contains(key)) broken(dir, std::string("state.json has no \"") + key + "\"");
  try {
    return j.at(key).get<T>();
  } catch (const nlohmann::json::exception& e) {
    broken(dir, std::string("state.json \"") + key + "\": " + e.what());
  }
}

}  // namespace

void write_checkpoint_files(const std::string& dir, const TrainState& s) {
  std::vector<std::string> files;
  save_dict(dir, "model.pt", s.model, files);
  for (const auto& [rate, dict] : s.emas) save_dict(dir, ema_file_name(rate), dict, files);
  save_dict(dir, "optimizer.pt", s.optimizer, files);
  save_dict(dir, "state.pt", pack_state_tensors(s), files);
  data::write_file_atomic(dir + "/state.json", state_json(s).dump(2) + "\n");
  files.push_back("state.json");
  Json manifest{{"format_version", kCheckpointFormatVersion}, {"step", s.step}, {"files", Json::object()}};
  for (const auto& f : files) {
    manifest["files"][f] = Json{{"bytes", fs::file_size(dir + "/" + f)}, {"sha256", fs_util::sha256_file(dir + "/" + f)}};
  }
  data::write_file_atomic(dir + "/MANIFEST.json", manifest.dump(2) + "\n");
  data::fsync_path(dir);
}

void verify_checkpoint(const std::string& dir) {
  const std::string mpath = dir + "/MANIFEST.json";
  if (!fs::exists(mpath)) broken(dir, "no MANIFEST.json (incomplete or not a checkpoint folder)");
  Json manifest;
  try {
    manifest = Json::parse(data::read_file(mpath));
  } catch (const nlohmann::json::exception& e) {
    broken(dir, std::string("MANIFEST.json is not valid JSON (corrupted): ") + e.what());
  }
  if (!manifest.contains("format_version") || !manifest["format_version"].is_number_integer() ||
      !manifest.contains("files") || !manifest["files"].is_object()) {
    broken(dir, "MANIFEST.json lacks format_version or files (corrupted)");
  }
  const int version = manifest["format_version"].get<int>();
  if (version > kCheckpointFormatVersion) {
    broken(dir, "format version " + std::to_string(version) + " is newer than this build's " +
                    std::to_string(kCheckpointFormatVersion) + "; use a newer ddpm");
  }
  for (const char* required : {"model.pt", "optimizer.pt", "state.pt", "state.json"}) {
    if (!manifest["files"].contains(required)) broken(dir, std::string("MANIFEST.json does not list ") + required);
  }
  for (const auto& [name, entry] : manifest["files"].items()) {
    const std::string path = dir + "/" + name;
    if (!fs::exists(path)) broken(dir, name + " is missing");
    const auto bytes = fs::file_size(path);
    const auto want_bytes = entry.value("bytes", static_cast<uintmax_t>(0));
    if (bytes != want_bytes) {
      broken(dir, name + " has " + std::to_string(bytes) + " bytes, the manifest says " + std::to_string(want_bytes) +
                      " (truncated or overwritten)");
    }
    const std::string sum = fs_util::sha256_file(path);
    const std::string want = entry.value("sha256", std::string());
    if (sum != want) broken(dir, name + " fails its SHA-256 check (corrupted): " + sum + " != " + want);
  }
}

TrainState load_checkpoint(const std::string& dir) {
  verify_checkpoint(dir);
  Json j;
  try {
    j = Json::parse(data::read_file(dir + "/state.json"));
  } catch (const nlohmann::json::exception& e) {
    broken(dir, std::string("state.json is not valid JSON: ") + e.what());
  }
  TrainState s;
  s.step = get<int64_t>(j, "step", dir);
  s.images_seen = get<int64_t>(j, "images_seen", dir);
  s.lr = get<double>(j, "lr", dir);
  s.loss_scale = get<double>(j, "loss_scale", dir);
  s.loss_scale_good_steps = get<int64_t>(j, "loss_scale_good_steps", dir);
  s.nonfinite_in_row = get<int64_t>(j, "nonfinite_in_row", dir);
  s.nonfinite_total = get<int64_t>(j, "nonfinite_total", dir);
  s.world_size = get<int>(j, "world_size", dir);
  s.config = j.value("config", Json());
  s.extra = j.value("extra", Json::object());
  s.model = model::load_tensor_dict(dir + "/model.pt");
  for (double rate : get<std::vector<double>>(j, "ema_rates", dir)) {
    s.emas.emplace_back(rate, model::load_tensor_dict(dir + "/" + ema_file_name(rate)));
  }
  s.optimizer = model::load_tensor_dict(dir + "/optimizer.pt");
  const model::TensorDict packed = model::load_tensor_dict(dir + "/state.pt");
  for (const auto& [name, t] : packed) {
    if (name.rfind("sampler/", 0) == 0) s.sampler.emplace_back(name.substr(8), t);
    if (name == "data_cursor") {
      const at::Tensor c = t.to(at::kLong).contiguous();
      s.data_cursor.assign(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
    }
  }
  const auto ranks = get<int64_t>(j, "rng_ranks", dir);
  for (int64_t r = 0; r < ranks; ++r) s.rng.push_back(extract_rng_state(packed, "rng/rank" + std::to_string(r)));
  return s;
}

}  // namespace ddpm::trainer
