// FID of a sampler over all ranks, shared by the training loop (--fid-every) and ddpm_eval --fid
// (both through trainer/fid_sampling.h, which supplies the diffusion model's sampler): the
// extractor from a --fid-extractor SPEC, reference statistics of a dataset (cached in HDF5 per
// dataset and extractor, computed once over the ranks), samples in fixed batches of global indices
// (the FID does not depend on the rank count), features all-gathered to rank 0.
#pragma once
#include <c10/core/Device.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "ddpm/evaluation/fid.h"

namespace ddpm::dist {
class Communicator;
}

namespace ddpm::evaluation {

// --fid-extractor SPEC: "domain:PATH" (ddpm_fid_net output), "inception:PATH" (pytorch-fid's
// InceptionV3 weights .pth) or "torchscript:PATH" (torch.jit.save). Throws
// std::invalid_argument naming `flag` for another kind or an empty path.
struct ExtractorSpec {
  std::string kind;  // domain | inception | torchscript
  std::string path;
};
ExtractorSpec parse_extractor_spec(const std::string& spec, const std::string& flag = "--fid-extractor");

// The extractor a SPEC names, on `device`. Throws std::invalid_argument naming `flag` and the
// file when it does not exist (with the fix), std::runtime_error when it cannot be loaded.
std::shared_ptr<FeatureExtractor> make_feature_extractor(const std::string& spec, const c10::Device& device,
                                                                     const std::string& flag = "--fid-extractor");

// --fid-stats default: "fid_stats.h5" in the training data's folder, so every run on that
// dataset shares it; RUN_DIR/fid_stats.h5 when that folder is not writable.
std::string default_fid_stats_path(const std::string& data_path, const std::string& run_dir);

struct FidSettings {
  std::string extractor;      // SPEC (see parse_extractor_spec)
  int64_t samples = 10000;    // total over all ranks
  std::string sampling = "ddim50";  // respacing of the sampler: "N", "a,b,c" or "ddimN" (read by the sampler)
  std::string stats_path;     // HDF5 cache of the reference statistics
  std::string data;           // reference dataset (HDF5 written by ddpm_prepare)
  uint64_t seed = 0;          // sample i is drawn from sample_generator(seed, i) (by the sampler)
  int64_t batch_size = 64;    // samples per sampling batch; batches are fixed ranges of global indices
  bool clip_denoised = true;  // read by the sampler
};

struct FidReport {
  double fid = 0.0;           // the same on every rank (broadcast from rank 0)
  std::string extractor;      // the extractor's name, e.g. "domain:fmnist_net.pt"
  int64_t samples = 0;
  double seconds = 0.0;       // sampling + features + gather + Frechet distance
};

// Built on every rank of `comm` (a collective): loads the extractor and the reference statistics
// of settings.data (rank 0 reads the cache; when absent, every rank extracts the features of its
// share of the dataset, rank 0 gathers them and writes the cache). `print` gets lines for the
// user (called on rank 0 only).
class FidEvaluation {
 public:
  FidEvaluation(FidSettings settings, dist::Communicator& comm, const c10::Device& device,
                std::function<void(const std::string&)> print = {});
  ~FidEvaluation();

  // sample(begin, end): the samples with global indices [begin, end) as images float
  // (end - begin, C, H, W) in [-1, 1], on any device, of the reference images' shape (C, H, W).
  using Sampler = std::function<at::Tensor(int64_t begin, int64_t end)>;

  // Every rank, at the same point: calls `sample` (under no_grad) for the batches of
  // settings.batch_size global indices of [0, settings.samples) that fall to this rank,
  // quantises the images to uint8 as stored images are (data::to_uint8_nhwc), extracts their
  // features, all-gathers them; rank 0 computes the Frechet distance to the reference.
  FidReport evaluate(const Sampler& sample);

  const FidSettings& settings() const { return settings_; }
  const std::string& extractor_name() const { return name_; }
  const c10::Device& device() const { return device_; }  // where the extractor runs
  // (C, H, W) of the reference images: the shape the sampler must produce.
  std::vector<int64_t> image_shape() const { return {image_c_, image_h_, image_w_}; }
  bool reference_from_cache() const { return from_cache_; }  // rank 0's view (false elsewhere)
  int64_t reference_count() const { return ref_count_; }     // images behind the reference stats

 private:
  void load_or_compute_reference();
  at::Tensor to_comm(const at::Tensor& t) const;
  // Every rank's features (n_r, D) -> all of them in rank order (S, D) on the CPU at rank 0
  // (undefined elsewhere). A rank without any sends (0, D).
  at::Tensor gather_features(const std::vector<at::Tensor>& mine);

  FidSettings settings_;
  dist::Communicator& comm_;
  c10::Device device_;
  std::function<void(const std::string&)> print_;
  std::shared_ptr<FeatureExtractor> extractor_;
  std::string name_;
  std::unique_ptr<FidEvaluator> evaluator_;  // rank 0 only
  int64_t image_c_ = 0, image_h_ = 0, image_w_ = 0;  // samples have the reference images' shape
  bool from_cache_ = false;
  int64_t ref_count_ = 0;
};

// Batches of `batch_size` global indices [k B, (k + 1) B) of `count`, split contiguously over the
// ranks: this rank's [begin, end). The same batches whatever the world size, so sampling is
// bit-for-bit the same on any rank count.
std::pair<int64_t, int64_t> fid_rank_range(int64_t count, int64_t batch_size, int rank, int world_size);

}  // namespace ddpm::evaluation
