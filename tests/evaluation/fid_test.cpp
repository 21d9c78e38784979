// FeatureStats (streaming float64 mean/covariance), FidEvaluator and the HDF5 reference-stats
// cache against np.mean / np.cov / scipy (tests/reference/frechet_reference.py).
#include <ATen/ATen.h>

#include <cmath>

#include "ddpm/evaluation/fid.h"
#include "testing/testing.h"

namespace {
using namespace ddpm::evaluation;
using ddpm::testing::tensors_near;

// A fake extractor: features are the flattened images (lets the evaluator be tested exactly).
class FlattenExtractor : public FeatureExtractor {
 public:
  std::string name() const override { return "flatten"; }
  at::Tensor features(const at::Tensor& images) override { return images.reshape({images.size(0), -1}); }
  int calls = 0;
};

TEST(FeatureStats, StreamingMatchesNumpyCov) {
  auto g = ddpm::testing::golden("frechet");
  const at::Tensor x = g.read("x");  // (37, 10), mean ~100: sums of squares would cancel
  FeatureStats s;
  for (auto [lo, hi] : {std::pair{0, 5}, {5, 6}, {6, 30}, {30, 37}}) s.add(x.slice(0, lo, hi));  // uneven batches
  EXPECT_EQ(s.count(), 37);
  EXPECT_TRUE(tensors_near(s.mean(), g.read("x_mean"), 1e-13, 1e-13, "stats mean f64"));
  EXPECT_TRUE(tensors_near(s.covariance(), g.read("x_cov"), 1e-11, 1e-12, "stats cov f64, uneven batches"));
  FeatureStats one;
  one.add(x.slice(0, 0, 1));
  EXPECT_THROW(one.covariance(), c10::Error);
  EXPECT_THROW(one.add(at::zeros({2, 3})), c10::Error);
}

TEST(FidEvaluator, FeaturesGiveScipyFid) {
  auto g = ddpm::testing::golden("frechet");
  GaussianStats ref{g.read("y_mean"), g.read("y_cov"), 29, "flatten", "toy"};
  FidEvaluator fid(std::make_shared<FlattenExtractor>(), ref);
  const at::Tensor x = g.read("x");
  fid.add_features(x.slice(0, 0, 20));
  fid.add_images(x.slice(0, 20, 37).reshape({17, 1, 2, 5}));  // flattened back to (17, 10)
  const FidResult r = fid.compute();
  const double want = g.read("fid_xy").item<double>();
  std::printf("[maxdiff] fid x vs y: got %.12g want %.12g rel %.2e\n", r.fid, want, std::abs(r.fid - want) / want);
  EXPECT_LE(std::abs(r.fid - want) / want, 1e-6);
  EXPECT_EQ(r.extractor, "flatten");
  EXPECT_EQ(r.samples, 37);
  fid.reset();
  EXPECT_EQ(fid.samples(), 0);
}

TEST(FidEvaluator, RefusesStatsOfAnotherExtractor) {
  GaussianStats ref{at::zeros({4}, at::kDouble), at::eye(4, at::kDouble), 10, "inception-v3", "cifar10"};
  EXPECT_THROW(FidEvaluator(std::make_shared<FlattenExtractor>(), ref), std::invalid_argument);
}

TEST(ReferenceStats, ComputedOnceThenReadFromHdf5Cache) {
  auto g = ddpm::testing::golden("frechet");
  const std::string cache = ddpm::testing::temp_dir("fid_cache") + "/ref_stats.h5";
  const at::Tensor x = g.read("x");
  FlattenExtractor ex;
  int batches = 0;
  auto make_source = [&] {
    return [&, i = int64_t{0}]() mutable -> std::optional<at::Tensor> {
      if (i >= 37) return std::nullopt;
      ++batches;
      at::Tensor b = x.slice(0, i, std::min<int64_t>(i + 8, 37));
      i += 8;
      return b;
    };
  };
  const GaussianStats first = reference_stats(cache, "toy/train", ex, make_source());
  EXPECT_EQ(batches, 5);
  EXPECT_TRUE(tensors_near(first.sigma, g.read("x_cov"), 1e-11, 1e-12, "computed ref cov"));
  const GaussianStats second = reference_stats(cache, "toy/train", ex, make_source());
  EXPECT_EQ(batches, 5) << "second call must come from the cache";
  EXPECT_EQ(second.count, 37);
  EXPECT_EQ(second.extractor, "flatten");
  EXPECT_TRUE(tensors_near(second.mu, first.mu, 0, 0, "cached mu"));
  EXPECT_TRUE(tensors_near(second.sigma, first.sigma, 0, 0, "cached sigma"));
  EXPECT_FALSE(load_reference_stats(cache, "toy/train", "inception-v3").has_value());
  EXPECT_FALSE(load_reference_stats(cache, "other", "flatten").has_value());
  // A second entry in the same file keeps the first.
  save_reference_stats(cache, {g.read("y_mean"), g.read("y_cov"), 29, "flatten", "other"});
  EXPECT_EQ(load_reference_stats(cache, "other", "flatten")->count, 29);
  EXPECT_EQ(load_reference_stats(cache, "toy/train", "flatten")->count, 37);
}

}  // namespace
