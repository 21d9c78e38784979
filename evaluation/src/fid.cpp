// Streaming feature statistics, the FidEvaluator and the HDF5 reference-statistics cache (through
// data::H5TensorFile); see ddpm/evaluation/fid.h.
#include <ATen/ATen.h>

#include <filesystem>
#include <stdexcept>

#include "ddpm/data/h5_tensor.h"
#include "ddpm/evaluation/fid.h"
#include "ddpm/evaluation/frechet.h"

namespace ddpm::evaluation {

void FeatureStats::add(const at::Tensor& features) {
  TORCH_CHECK(features.dim() == 2, "FeatureStats: expected features (N, D), got ", features.sizes());
  if (features.size(0) == 0) return;
  const at::Tensor x = features.to(at::kCPU, at::kDouble);  // (N, D)
  TORCH_CHECK(n_ == 0 || x.size(1) == mean_.size(0), "FeatureStats: feature size ", x.size(1),
              " differs from earlier batches (", mean_.size(0), ")");
  const std::int64_t nb = x.size(0);
  const at::Tensor mb = x.mean(0);                         // (D)
  const at::Tensor xc = x - mb;                            // (N, D)
  const at::Tensor m2b = at::matmul(xc.transpose(0, 1), xc);  // (D, D)
  if (n_ == 0) {
    mean_ = mb;
    m2_ = m2b;
    n_ = nb;
    return;
  }
  const double n = static_cast<double>(n_ + nb);
  const at::Tensor delta = mb - mean_;  // (D)
  m2_ = m2_ + m2b + at::outer(delta, delta) * (static_cast<double>(n_) * static_cast<double>(nb) / n);
  mean_ = mean_ + delta * (static_cast<double>(nb) / n);
  n_ += nb;
}

int64_t FeatureStats::dim() const { return n_ == 0 ? 0 : mean_.size(0); }

at::Tensor FeatureStats::mean() const {
  TORCH_CHECK(n_ > 0, "FeatureStats: no features added");
  return mean_;
}

at::Tensor FeatureStats::covariance() const {
  TORCH_CHECK(n_ >= 2, "FeatureStats: covariance needs at least 2 samples, have ", n_);
  return m2_ / static_cast<double>(n_ - 1);
}

FidEvaluator::FidEvaluator(std::shared_ptr<FeatureExtractor> extractor, GaussianStats reference)
    : extractor_(std::move(extractor)), ref_(std::move(reference)) {
  if (!extractor_) throw std::invalid_argument("FidEvaluator: no feature extractor");
  name_ = extractor_->name();
  if (!ref_.extractor.empty() && ref_.extractor != name_) {
    throw std::invalid_argument("FidEvaluator: reference statistics of dataset '" + ref_.dataset +
                                "' come from extractor '" + ref_.extractor + "', not '" + name_ +
                                "'; compute them with the same extractor");
  }
}

void FidEvaluator::add_images(const at::Tensor& images) { stats_.add(extractor_->features(images)); }
void FidEvaluator::add_features(const at::Tensor& features) { stats_.add(features); }

FidResult FidEvaluator::compute() const {
  TORCH_CHECK(stats_.count() >= 2, "FidEvaluator: need at least 2 samples, have ", stats_.count());
  TORCH_CHECK(stats_.dim() == ref_.mu.size(0), "FidEvaluator: features have ", stats_.dim(),
              " dimensions, reference statistics ", ref_.mu.size(0));
  return {frechet_distance(stats_.mean(), stats_.covariance(), ref_.mu, ref_.sigma), name_, stats_.count()};
}

// --- HDF5 cache (data::H5TensorFile) ---------------------------------------------------------
namespace {

std::string key_part(std::string s) {
  for (char& c : s)
    if (c == '/') c = '|';
  if (s.empty() || s == ".") throw std::invalid_argument("reference stats: empty dataset or extractor name");
  return s;
}

// "<dataset>/<extractor>": the group of one entry.
std::string entry_group(const std::string& dataset, const std::string& extractor) {
  return key_part(dataset) + "/" + key_part(extractor);
}

}  // namespace

std::optional<GaussianStats> load_reference_stats(const std::string& cache_path, const std::string& dataset,
                                                  const std::string& extractor) {
  if (!std::filesystem::exists(cache_path)) return std::nullopt;
  const std::string g = entry_group(dataset, extractor);
  try {
    const data::H5TensorFile f = data::H5TensorFile::open_read(cache_path);
    if (!f.has(g + "/mu")) return std::nullopt;
    GaussianStats s{f.read(g + "/mu").to(at::kDouble), f.read(g + "/sigma").to(at::kDouble), 0, extractor, dataset};
    s.count = static_cast<std::int64_t>(f.read(g + "/count").to(at::kDouble).item<double>());
    return s;
  } catch (const std::runtime_error& ex) {
    throw std::runtime_error(cache_path + ": cannot read reference statistics for dataset '" + dataset +
                             "', extractor '" + extractor + "' (" + ex.what() +
                             "); delete the cache file to recompute");
  }
}

void save_reference_stats(const std::string& cache_path, const GaussianStats& stats) {
  TORCH_CHECK(stats.mu.dim() == 1 && stats.sigma.dim() == 2, "save_reference_stats: mu (D) and sigma (D, D) expected");
  const std::string g = entry_group(stats.dataset, stats.extractor);
  try {
    data::H5TensorFile f = data::H5TensorFile::open_rw(cache_path);
    f.write(g + "/mu", stats.mu.to(at::kCPU, at::kDouble));                     // (D)
    f.write(g + "/sigma", stats.sigma.to(at::kCPU, at::kDouble));               // (D, D)
    f.write(g + "/count", at::full({1}, static_cast<double>(stats.count), at::kDouble));  // (1)
  } catch (const std::runtime_error& ex) {
    throw std::runtime_error(cache_path + ": cannot write reference statistics (" + ex.what() +
                             "); check the folder exists and is writable");
  }
}

GaussianStats reference_stats(const std::string& cache_path, const std::string& dataset, FeatureExtractor& extractor,
                              const std::function<std::optional<at::Tensor>()>& next_batch) {
  const std::string name = extractor.name();
  if (auto cached = load_reference_stats(cache_path, dataset, name)) return *cached;
  FeatureStats stats;
  while (auto batch = next_batch()) stats.add(extractor.features(*batch));
  if (stats.count() < 2)
    throw std::runtime_error("reference statistics for dataset '" + dataset + "': got " +
                             std::to_string(stats.count()) + " images, need at least 2");
  GaussianStats s{stats.mean(), stats.covariance(), stats.count(), name, dataset};
  save_reference_stats(cache_path, s);
  return s;
}

}  // namespace ddpm::evaluation
