// Test helpers; see testing.h.
#include "testing/testing.h"

#include <ATen/ATen.h>
#include <torch/cuda.h>

#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace ddpm::testing {

namespace {
std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : fallback;
}
}  // namespace

std::string source_dir() { return env_or("DDPM_SOURCE_DIR", "."); }
std::string binary_dir() { return env_or("DDPM_BINARY_DIR", "."); }

std::string bin(const std::string& name) { return binary_dir() + "/bin/" + name; }

std::string mpirun(int np) { return std::string(DDPM_MPIEXEC) + " -np " + std::to_string(np) + " --oversubscribe "; }

data::H5TensorFile golden(const std::string& name) {
  return data::H5TensorFile::open_read(binary_dir() + "/golden/" + name + ".h5");
}

std::string temp_dir(const std::string& name) {
  namespace fs = std::filesystem;
  const fs::path p = fs::path(binary_dir()) / "tmp" / name;
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

::testing::AssertionResult tensors_near(const at::Tensor& actual, const at::Tensor& expected,
                                    double rtol, double atol, const std::string& label) {
  if (actual.sizes() != expected.sizes()) {
    return ::testing::AssertionFailure() << label << ": shape " << actual.sizes()
                                         << " != expected " << expected.sizes();
  }
  const at::Tensor a = actual.detach().to(at::kCPU, at::kDouble);
  const at::Tensor e = expected.detach().to(at::kCPU, at::kDouble);
  const at::Tensor diff = (a - e).abs();
  const at::Tensor rel = diff / e.abs().clamp_min(1e-300);
  const double max_abs = diff.numel() ? diff.max().item<double>() : 0.0;
  const double max_rel = rel.numel() ? at::where(diff > 0, rel, at::zeros_like(rel)).max().item<double>() : 0.0;
  std::printf("[maxdiff] %s: abs %.3e rel %.3e (atol %.1e, rtol %.1e, %lld values)\n", label.c_str(),
              max_abs, max_rel, atol, rtol, static_cast<long long>(a.numel()));
  const at::Tensor bad = (diff > atol + rtol * e.abs()) | (a.isnan() != e.isnan());
  if (bad.any().item<bool>()) {
    const int64_t i = bad.flatten().nonzero()[0].item<int64_t>();
    return ::testing::AssertionFailure()
           << label << ": " << bad.sum().item<int64_t>() << " of " << a.numel()
           << " values out of tolerance; first at flat index " << i << ": got "
           << a.flatten()[i].item<double>() << ", expected " << e.flatten()[i].item<double>();
  }
  return ::testing::AssertionSuccess();
}

bool cuda_available() { return torch::cuda::is_available(); }

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

int run_command(const std::string& cmd, const std::string& log, bool cpu_only) {
  const std::string env = cpu_only ? "export CUDA_VISIBLE_DEVICES=; " : "";
  const int rc = std::system((env + cmd + " > " + log + " 2>&1").c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : 128 + WTERMSIG(rc);
}

::testing::AssertionResult state_dict_matches_golden(const std::vector<std::pair<std::string, at::Tensor>>& sd,
                                                     const at::Tensor& keys, const at::Tensor& shapes) {
  const at::Tensor bytes = keys.contiguous();
  std::stringstream text(std::string(reinterpret_cast<const char*>(bytes.data_ptr<uint8_t>()), bytes.numel()));
  std::vector<std::string> names;
  for (std::string line; std::getline(text, line, '\n');) names.push_back(line);
  if (sd.size() != names.size()) {
    return ::testing::AssertionFailure() << "state_dict has " << sd.size() << " entries, the reference " << names.size();
  }
  std::string wrong;
  for (size_t i = 0; i < names.size(); ++i) {
    std::vector<int64_t> want;
    for (int64_t j = 0; j < shapes.size(1) && shapes[i][j].item<int64_t>() >= 0; ++j) {
      want.push_back(shapes[i][j].item<int64_t>());
    }
    if (sd[i].first != names[i]) wrong += "\n  key " + std::to_string(i) + ": " + sd[i].first + " vs " + names[i];
    if (sd[i].second.sizes().vec() != want) wrong += "\n  shape of " + names[i] + " differs";
  }
  if (!wrong.empty()) return ::testing::AssertionFailure() << "state_dict differs from the reference:" << wrong;
  return ::testing::AssertionSuccess();
}

}  // namespace ddpm::testing
