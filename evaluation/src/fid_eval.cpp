// FID over all ranks (training loop and ddpm_eval): extractor SPECs, the reference statistics
// cache keyed by (dataset, extractor + weights hash), sampling in rank-independent batches of
// global indices and the gather to rank 0; see ddpm/evaluation/fid_eval.h.
#include "ddpm/evaluation/fid_eval.h"

#include <torch/torch.h>

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "ddpm/data/dataset.h"
#include "ddpm/data/images.h"
#include "ddpm/dist/communicator.h"
#include "ddpm/evaluation/domain_net.h"

namespace ddpm::evaluation {

namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

constexpr int64_t kReferenceBatch = 500;  // dataset images per feature batch

// FNV-1a 64 of a file's bytes: the cache entry changes when the extractor's weights do, even
// under the same file name.
std::string file_hash(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot read the FID extractor file");
  uint64_t h = 0xcbf29ce484222325ULL;
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    for (std::streamsize i = 0; i < in.gcount(); ++i) {
      h = (h ^ static_cast<unsigned char>(buf[static_cast<size_t>(i)])) * 0x100000001b3ULL;
    }
  }
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
  return hex;
}

// uint8 (N, H, W, C) -> float (N, C, H, W) in [0, 1], what every extractor takes.
at::Tensor to_unit_range(const at::Tensor& images_u8) {
  return images_u8.permute({0, 3, 1, 2}).to(at::kFloat).div(255.0).contiguous();
}

std::string fmt(const char* spec, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, spec, v);
  return buf;
}

}  // namespace

ExtractorSpec parse_extractor_spec(const std::string& spec, const std::string& flag) {
  const std::string fix = "give domain:PATH (a ddpm_fid_net output), inception:PATH (pytorch-fid's "
                          "pt_inception-2015-12-05-6726825d.pth) or torchscript:PATH (torch.jit.save)";
  const size_t colon = spec.find(':');
  if (spec.empty()) throw std::invalid_argument(flag + " is empty; " + fix);
  if (colon == std::string::npos) throw std::invalid_argument(flag + " '" + spec + "' has no KIND:; " + fix);
  ExtractorSpec s{spec.substr(0, colon), spec.substr(colon + 1)};
  if (s.kind != "domain" && s.kind != "inception" && s.kind != "torchscript") {
    throw std::invalid_argument(flag + " '" + spec + "': unknown extractor kind '" + s.kind + "'; " + fix);
  }
  if (s.path.empty()) throw std::invalid_argument(flag + " '" + spec + "': no file after '" + s.kind + ":'; " + fix);
  return s;
}

std::shared_ptr<FeatureExtractor> make_feature_extractor(const std::string& spec, const c10::Device& device,
                                                                     const std::string& flag) {
  const ExtractorSpec s = parse_extractor_spec(spec, flag);
  if (!fs::is_regular_file(s.path)) {
    const std::string how =
        s.kind == "domain"      ? "train one with ddpm_fid_net --data TRAIN.h5 --test TEST.h5 --out " + s.path
        : s.kind == "inception" ? "download pytorch-fid's pt_inception-2015-12-05-6726825d.pth to " + s.path
                                : "write one with torch.jit.save(torch.jit.script(model), '" + s.path + "')";
    throw std::invalid_argument(flag + " " + spec + ": the file " + s.path + " does not exist; " + how +
                                ", or point " + flag + " at an existing file");
  }
  if (s.kind == "domain") return make_domain_extractor(s.path, device);
  if (s.kind == "inception") return make_inception_extractor(s.path, device);
  return make_torchscript_extractor(s.path, device);
}

std::string default_fid_stats_path(const std::string& data_path, const std::string& run_dir) {
  fs::path dir = fs::absolute(data_path).parent_path();
  if (::access(dir.c_str(), W_OK) == 0) return (dir / "fid_stats.h5").string();
  return (fs::path(run_dir) / "fid_stats.h5").string();
}

std::pair<int64_t, int64_t> fid_rank_range(int64_t count, int64_t batch_size, int rank, int world_size) {
  TORCH_CHECK(batch_size > 0 && world_size > 0, "fid_rank_range: batch_size and world_size must be > 0");
  const int64_t batches = (count + batch_size - 1) / batch_size;
  const int64_t b0 = batches * rank / world_size, b1 = batches * (rank + 1) / world_size;
  return {std::min(count, b0 * batch_size), std::min(count, b1 * batch_size)};
}

// --- FidEvaluation --------------------------------------------------------------------------

FidEvaluation::FidEvaluation(FidSettings settings, dist::Communicator& comm, const c10::Device& device,
                             std::function<void(const std::string&)> print)
    : settings_(std::move(settings)), comm_(comm), device_(device), print_(std::move(print)) {
  if (settings_.samples < 2) throw std::invalid_argument("--fid-samples must be >= 2 (a covariance needs two)");
  if (settings_.batch_size < 1) throw std::invalid_argument("FID sampling batch size must be >= 1");
  extractor_ = make_feature_extractor(settings_.extractor, device_);
  name_ = extractor_->name();
  load_or_compute_reference();
}

FidEvaluation::~FidEvaluation() = default;

at::Tensor FidEvaluation::to_comm(const at::Tensor& t) const {
  return t.to(comm_.device()).contiguous();
}

at::Tensor FidEvaluation::gather_features(const std::vector<at::Tensor>& mine) {
  // The feature size of a rank without images: from one blank image.
  const int64_t dim = mine.empty() ? extractor_->features(at::zeros({1, image_c_, image_h_, image_w_})).size(1)
                                   : mine.front().size(1);
  const at::Tensor local = mine.empty() ? at::zeros({0, dim}, at::kFloat) : at::cat(mine, 0);  // (n_r, D)
  std::vector<at::Tensor> parts = comm_.all_gather_v(to_comm(local));
  if (comm_.rank() != 0) return at::Tensor();
  for (auto& p : parts) p = p.cpu();
  return at::cat(parts, 0);
}

void FidEvaluation::load_or_compute_reference() {
  const auto t0 = Clock::now();
  const data::ImageDataset ds = data::ImageDataset::open(settings_.data);
  const data::DatasetInfo& info = ds.info();
  image_c_ = info.channels, image_h_ = info.height, image_w_ = info.width;
  // Cache keys: the data file's name and size, the extractor's name and its weights' hash.
  const std::string dataset_key = fs::path(settings_.data).filename().string() + " (" +
                                  std::to_string(info.count) + " images)";
  const std::string extractor_key = name_ + " #" + file_hash(parse_extractor_spec(settings_.extractor).path);
  const bool root = comm_.rank() == 0;
  std::optional<GaussianStats> cached;
  if (root) cached = load_reference_stats(settings_.stats_path, dataset_key, extractor_key);
  at::Tensor flag = to_comm(at::full({1}, cached ? 1.0f : 0.0f));
  comm_.broadcast(flag, 0);
  from_cache_ = flag.cpu().item<float>() > 0.5f && root;
  if (flag.cpu().item<float>() > 0.5f) {
    if (root) {
      ref_count_ = cached->count;
      cached->extractor = name_;
      evaluator_ = std::make_unique<FidEvaluator>(extractor_, *cached);
      if (print_) print_("fid reference: " + settings_.stats_path + " [" + dataset_key + ", " + extractor_key +
                         "] loaded from the cache (" + std::to_string(ref_count_) + " images)");
    }
    return;
  }
  // Every rank: features of its contiguous share of the dataset.
  // (batches of one index: the contiguous [count r / W, count (r + 1) / W))
  const auto [begin, end] = fid_rank_range(info.count, 1, comm_.rank(), comm_.world_size());
  std::vector<at::Tensor> mine;
  for (int64_t i = begin; i < end; i += kReferenceBatch) {
    const int64_t n = std::min(kReferenceBatch, end - i);
    mine.push_back(extractor_->features(to_unit_range(ds.read_images(i, n))));  // (n, D)
  }
  const at::Tensor all = gather_features(mine);  // (N, D) at rank 0
  if (!root) return;
  FeatureStats stats;
  stats.add(all);
  TORCH_CHECK(stats.count() >= 2, "--data ", settings_.data, ": ", stats.count(),
              " images, the FID reference needs at least 2");
  GaussianStats s{stats.mean(), stats.covariance(), stats.count(), extractor_key, dataset_key};
  fs::path parent = fs::absolute(settings_.stats_path).parent_path();
  fs::create_directories(parent);
  save_reference_stats(settings_.stats_path, s);
  ref_count_ = s.count;
  s.extractor = name_;
  evaluator_ = std::make_unique<FidEvaluator>(extractor_, s);
  if (print_) print_("fid reference: " + settings_.stats_path + " [" + dataset_key + ", " + extractor_key +
                     "] computed from " + std::to_string(ref_count_) + " images in " +
                     fmt("%.1f", seconds_since(t0)) + " s and cached");
}

FidReport FidEvaluation::evaluate(const Sampler& sample) {
  const auto t0 = Clock::now();
  torch::NoGradGuard no_grad;
  const int64_t B = settings_.batch_size;
  const auto [begin, end] = fid_rank_range(settings_.samples, B, comm_.rank(), comm_.world_size());
  std::vector<at::Tensor> feats;
  for (int64_t lo = begin; lo < end; lo += B) {
    const int64_t hi = std::min(end, lo + B);
    const at::Tensor images = sample(lo, hi);  // (n, C, H, W) in [-1, 1]
    TORCH_CHECK(images.dim() == 4 && images.size(0) == hi - lo && images.size(1) == image_c_ &&
                    images.size(2) == image_h_ && images.size(3) == image_w_,
                "FidEvaluation::evaluate: the sampler returned shape ", images.sizes(), " for indices [", lo, ", ",
                hi, "), expected (", hi - lo, ", ", image_c_, ", ", image_h_, ", ", image_w_,
                ") (the reference images' shape)");
    // Quantised as images are stored (improved-diffusion's uint8 conversion), then [0, 1].
    feats.push_back(extractor_->features(to_unit_range(data::to_uint8_nhwc(images))));  // (n, D)
  }
  const at::Tensor all = gather_features(feats);  // (S, D) in global index order at rank 0
  at::Tensor value = at::zeros({1}, at::kDouble);
  if (comm_.rank() == 0) {
    evaluator_->reset();
    evaluator_->add_features(all);  // added at once
    value[0] = evaluator_->compute().fid;
  }
  value = to_comm(value);
  comm_.broadcast(value, 0);
  FidReport r;
  r.fid = value.cpu().item<double>();
  r.extractor = name_;
  r.samples = settings_.samples;
  r.seconds = seconds_since(t0);
  return r;
}

}  // namespace ddpm::evaluation
