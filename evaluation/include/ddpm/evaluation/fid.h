// FID (Heusel et al. 2017): feature extractors (pytorch-fid's InceptionV3, any TorchScript
// module), streaming float64 feature statistics, the FidEvaluator, and reference statistics
// cached in HDF5 per (dataset, extractor). Every FID names the extractor that produced it.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace ddpm::evaluation {

// images (N, C, H, W) with values in [0, 1] (C = 1 is repeated to 3 where the network needs
// RGB) -> features (N, D) float32 on the CPU.
class FeatureExtractor {
 public:
  virtual ~FeatureExtractor() = default;
  virtual std::string name() const = 0;  // the `extractor` label of every FID it produces
  virtual at::Tensor features(const at::Tensor& images) = 0;
};

// pytorch-fid's InceptionV3 pool3 features (2048-d) from its weights file.
std::unique_ptr<FeatureExtractor> make_inception_extractor(const std::string& weights_path,
                                                           c10::Device device = c10::kCPU);
// Any TorchScript module (torch.jit.save): called with images (N, C, H, W) in [0, 1]; its
// output is flattened to (N, D). Named "torchscript:<file name>" unless `name` is given.
std::unique_ptr<FeatureExtractor> make_torchscript_extractor(const std::string& module_path,
                                                             c10::Device device = c10::kCPU,
                                                             const std::string& name = "");

// Mean and covariance of features, accumulated batch by batch in float64 with Chan et al.'s
// pairwise update (no sum-of-squares cancellation). Covariance is unbiased (N - 1), as np.cov.
class FeatureStats {
 public:
  void add(const at::Tensor& features);  // (N, D)
  std::int64_t count() const { return n_; }
  int64_t dim() const;
  at::Tensor mean() const;        // (D) float64
  at::Tensor covariance() const;  // (D, D) float64; needs count() >= 2
 private:
  std::int64_t n_ = 0;
  at::Tensor mean_;  // (D) float64
  at::Tensor m2_;    // (D, D) float64, sum of outer products of deviations
};

struct GaussianStats {
  at::Tensor mu;     // (D) float64
  at::Tensor sigma;  // (D, D) float64
  std::int64_t count = 0;
  std::string extractor;
  std::string dataset;
};

struct FidResult {
  double fid = 0;
  std::string extractor;
  std::int64_t samples = 0;
};

class FidEvaluator {
 public:
  FidEvaluator(std::shared_ptr<FeatureExtractor> extractor, GaussianStats reference);
  const std::string& extractor_name() const { return name_; }
  void add_images(const at::Tensor& images);      // (N, C, H, W) in [0, 1]
  void add_features(const at::Tensor& features);  // (N, D), e.g. all-gathered from every rank
  std::int64_t samples() const { return stats_.count(); }
  FidResult compute() const;  // Frechet distance of the samples so far to the reference
  void reset() { stats_ = FeatureStats(); }
  FeatureExtractor& extractor() { return *extractor_; }

 private:
  std::shared_ptr<FeatureExtractor> extractor_;
  GaussianStats ref_;
  std::string name_;
  FeatureStats stats_;
};

// HDF5 cache of reference statistics: group "/<dataset>/<extractor>" (slashes in either become
// '|') holding float64 datasets mu (D), sigma (D, D) and count (1), written with
// data::H5TensorFile. load returns nullopt when the entry is absent.
std::optional<GaussianStats> load_reference_stats(const std::string& cache_path, const std::string& dataset,
                                                  const std::string& extractor);
void save_reference_stats(const std::string& cache_path, const GaussianStats& stats);

// Cached stats, or computes them once: `next_batch` yields image batches in [0, 1] until it
// returns nullopt; the result is written to the cache before it is returned.
GaussianStats reference_stats(const std::string& cache_path, const std::string& dataset, FeatureExtractor& extractor,
                              const std::function<std::optional<at::Tensor>()>& next_batch);

}  // namespace ddpm::evaluation
