// Streaming feature statistics, the FidEvaluator and the HDF5 reference-statistics cache;
// see ddpm/evaluation/fid.h.
#include <ATen/ATen.h>
#include <H5Cpp.h>

#include <filesystem>
#include <stdexcept>

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

// --- HDF5 cache -----------------------------------------------------------------------------
namespace {

std::string key_part(std::string s) {
  for (char& c : s)
    if (c == '/') c = '|';
  if (s.empty() || s == "." ) throw std::invalid_argument("reference stats: empty dataset or extractor name");
  return s;
}

bool has_link(const H5::Group& g, const std::string& name) { return H5Lexists(g.getId(), name.c_str(), H5P_DEFAULT) > 0; }

H5::Group open_or_create(H5::Group& parent, const std::string& name) {
  return has_link(parent, name) ? parent.openGroup(name) : parent.createGroup(name);
}

at::Tensor read_f64(const H5::Group& g, const std::string& name) {
  H5::DataSet ds = g.openDataSet(name);
  H5::DataSpace sp = ds.getSpace();
  std::vector<hsize_t> dims(sp.getSimpleExtentNdims());
  sp.getSimpleExtentDims(dims.data());
  at::Tensor t = at::empty(std::vector<int64_t>(dims.begin(), dims.end()), at::kDouble);
  ds.read(t.data_ptr<double>(), H5::PredType::NATIVE_DOUBLE);
  return t;
}

void write_f64(H5::Group& g, const std::string& name, const at::Tensor& t) {
  const at::Tensor c = t.to(at::kCPU, at::kDouble).contiguous();
  if (has_link(g, name)) H5Ldelete(g.getId(), name.c_str(), H5P_DEFAULT);
  std::vector<hsize_t> dims(c.sizes().begin(), c.sizes().end());
  H5::DataSpace sp(static_cast<int>(dims.size()), dims.data());
  g.createDataSet(name, H5::PredType::NATIVE_DOUBLE, sp).write(c.data_ptr<double>(), H5::PredType::NATIVE_DOUBLE);
}

}  // namespace

std::optional<GaussianStats> load_reference_stats(const std::string& cache_path, const std::string& dataset,
                                                  const std::string& extractor) {
  if (!std::filesystem::exists(cache_path)) return std::nullopt;
  try {
    H5::H5File f(cache_path, H5F_ACC_RDONLY);
    H5::Group root = f.openGroup("/");
    const std::string d = key_part(dataset), e = key_part(extractor);
    if (!has_link(root, d)) return std::nullopt;
    H5::Group gd = root.openGroup(d);
    if (!has_link(gd, e)) return std::nullopt;
    H5::Group g = gd.openGroup(e);
    GaussianStats s{read_f64(g, "mu"), read_f64(g, "sigma"), 0, extractor, dataset};
    s.count = static_cast<std::int64_t>(read_f64(g, "count").item<double>());
    return s;
  } catch (const H5::Exception& ex) {
    throw std::runtime_error(cache_path + ": cannot read reference statistics for dataset '" + dataset +
                             "', extractor '" + extractor + "' (" + ex.getDetailMsg() +
                             "); delete the cache file to recompute");
  }
}

void save_reference_stats(const std::string& cache_path, const GaussianStats& stats) {
  TORCH_CHECK(stats.mu.dim() == 1 && stats.sigma.dim() == 2, "save_reference_stats: mu (D) and sigma (D, D) expected");
  try {
    H5::Exception::dontPrint();
    H5::H5File f(cache_path, std::filesystem::exists(cache_path) ? H5F_ACC_RDWR : H5F_ACC_TRUNC);
    H5::Group root = f.openGroup("/");
    H5::Group gd = open_or_create(root, key_part(stats.dataset));
    H5::Group g = open_or_create(gd, key_part(stats.extractor));
    write_f64(g, "mu", stats.mu);
    write_f64(g, "sigma", stats.sigma);
    write_f64(g, "count", at::full({1}, static_cast<double>(stats.count), at::kDouble));
  } catch (const H5::Exception& ex) {
    throw std::runtime_error(cache_path + ": cannot write reference statistics (" + ex.getDetailMsg() +
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
