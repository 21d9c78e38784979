// ddpm::ops Gaussian functions against tests/reference/ops_reference.py (float64 numpy).
#include <ATen/ATen.h>

#include "ddpm/ops/gaussian.h"
#include "testing/testing.h"

namespace {
using ddpm::testing::tensors_near;

class OpsGolden : public ::testing::Test {
 protected:
  ddpm::data::H5TensorFile g = ddpm::testing::golden("ops");
  at::Tensor r(const char* n) { return g.read(n); }
};

TEST_F(OpsGolden, NormalKlFloat64AndFloat32) {
  const at::Tensor kl = ddpm::ops::normal_kl(r("m1"), r("lv1"), r("m2"), r("lv2"));
  EXPECT_TRUE(tensors_near(kl, r("kl"), 1e-12, 1e-14, "normal_kl f64"));
  const at::Tensor kl32 = ddpm::ops::normal_kl(r("m1").to(at::kFloat), r("lv1").to(at::kFloat),
                                               r("m2").to(at::kFloat), r("lv2").to(at::kFloat));
  EXPECT_TRUE(tensors_near(kl32, r("kl"), 1e-5, 1e-5, "normal_kl f32"));
  EXPECT_TRUE(tensors_near(ddpm::ops::mean_flat(kl), r("mean_flat_kl"), 1e-12, 1e-14, "mean_flat"));
}

TEST_F(OpsGolden, ApproxStandardNormalCdf) {
  EXPECT_TRUE(tensors_near(ddpm::ops::approx_standard_normal_cdf(r("z")), r("cdf"), 1e-12, 1e-15, "cdf f64"));
}

TEST_F(OpsGolden, DiscretizedGaussianLogLikelihood) {
  const at::Tensor ll = ddpm::ops::discretized_gaussian_log_likelihood(r("x"), r("means"), r("log_scales"));
  EXPECT_TRUE(tensors_near(ll, r("ll"), 1e-12, 1e-12, "discretized ll f64"));
  const at::Tensor ll32 = ddpm::ops::discretized_gaussian_log_likelihood(
      r("x").to(at::kFloat), r("means").to(at::kFloat), r("log_scales").to(at::kFloat));
  EXPECT_TRUE(tensors_near(ll32, r("ll"), 1e-5, 1e-5, "discretized ll f32"));
}

// Far tails: log(cdf_plus - cdf_min) with a delta down to ~1e-10 amplifies one-ulp differences
// of tanh by 1/delta, in every implementation; float64 still agrees to ~1e-7 relative.
TEST_F(OpsGolden, DiscretizedGaussianLogLikelihoodTails) {
  const at::Tensor ll = ddpm::ops::discretized_gaussian_log_likelihood(r("x"), r("tail_means"),
                                                                       r("tail_log_scales"));
  EXPECT_TRUE(tensors_near(ll, r("ll_tail"), 1e-6, 1e-9, "discretized ll tails f64"));
}

TEST(OpsShapes, DiscretizedLikelihoodRejectsMismatchedShapes) {
  EXPECT_THROW(ddpm::ops::discretized_gaussian_log_likelihood(at::zeros({2, 3}), at::zeros({2, 3}),
                                                              at::zeros({3, 2})),
               c10::Error);
}
}  // namespace
