// The forward process, the posterior, p_mean_variance for every mean x variance type (with and
// without clipping) and the x_0 predictions, against tests/reference/diffusion_reference.py.
#include "diffusion_golden.h"

namespace ddpm::diffusion::testing {
namespace {

class Core : public DiffusionGolden {};

TEST_F(Core, QSampleAndQMeanVariance) {
  const GaussianDiffusion d = core();
  for (auto dtype : {at::kDouble, at::kFloat}) {
    const bool f64 = dtype == at::kDouble;
    const double rtol = f64 ? kRtol64 : kRtol32, atol = f64 ? kAtol64 : kAtol32;
    const std::string tag = f64 ? " f64" : " f32";
    const at::Tensor x0 = r("x_start").to(dtype), noise = r("noise").to(dtype), t = r("t");
    const at::Tensor x_t = d.q_sample(x0, t, noise);
    EXPECT_EQ(x_t.scalar_type(), dtype);
    EXPECT_TRUE(tensors_near(x_t, r("x_t"), rtol, atol, "q_sample" + tag));
    const MeanVariance q = d.q_mean_variance(x0, t);
    EXPECT_TRUE(tensors_near(q.mean, r("q.mean"), rtol, atol, "q mean" + tag));
    EXPECT_TRUE(tensors_near(q.log_variance, r("q.log_variance"), rtol, atol, "q log_variance" + tag));
    EXPECT_TRUE(tensors_near(q.variance, at::exp(r("q.log_variance")), rtol, atol, "q variance" + tag));
  }
}

TEST_F(Core, Posterior) {
  const GaussianDiffusion d = core();
  for (auto dtype : {at::kDouble, at::kFloat}) {
    const bool f64 = dtype == at::kDouble;
    const double rtol = f64 ? kRtol64 : kRtol32, atol = f64 ? kAtol64 : kAtol32;
    const std::string tag = f64 ? " f64" : " f32";
    const MeanVariance p = d.q_posterior_mean_variance(r("x_start").to(dtype), r("x_t").to(dtype), r("t"));
    EXPECT_TRUE(tensors_near(p.mean, r("post.mean"), rtol, atol, "posterior mean" + tag));
    EXPECT_TRUE(tensors_near(p.variance, r("post.variance"), rtol, atol, "posterior variance" + tag));
    EXPECT_TRUE(tensors_near(p.log_variance, r("post.log_variance"), rtol, atol, "posterior log_variance" + tag));
  }
}

// Every mean type x variance type, clipped and not, from one fixed network output.
TEST_F(Core, PMeanVarianceEveryCombination) {
  for (const char* m : kMeans) {
    for (const char* v : kVars) {
      const GaussianDiffusion d = core(m, v);
      for (int clip : {0, 1}) {
        const std::string p = std::string("pmv.") + m + "." + v + "." + std::to_string(clip) + ".";
        const PMeanVariance out = d.p_mean_variance_from_output(output_for(v), r("x_t"), r("t"), clip == 1);
        EXPECT_TRUE(tensors_near(out.mean, r(p + "mean"), kRtol64, kAtol64, p + "mean"));
        EXPECT_TRUE(tensors_near(out.log_variance, r(p + "log_variance"), kRtol64, kAtol64, p + "log_variance"));
        EXPECT_TRUE(tensors_near(out.variance, r(p + "variance"), kRtol64, kAtol64, p + "variance"));
        EXPECT_TRUE(tensors_near(out.pred_xstart, r(p + "pred_xstart"), kRtol64, kAtol64, p + "pred_xstart"));
      }
    }
  }
}

// The float32 path, with the float32 coefficients, against the float64 reference. Unclipped x_0
// predictions near t = T reach |x_0| ~ 100 (1/sqrt(abar_T) ~ 190), hence relative tolerances.
TEST_F(Core, PMeanVarianceFloat32) {
  for (const char* m : kMeans) {
    for (const char* v : kVars) {
      const GaussianDiffusion d = core(m, v);
      for (int clip : {0, 1}) {
        const std::string p = std::string("pmv.") + m + "." + v + "." + std::to_string(clip) + ".";
        const PMeanVariance out =
            d.p_mean_variance_from_output(output_for(v).to(at::kFloat), r("x_t").to(at::kFloat), r("t"), clip == 1);
        EXPECT_EQ(out.mean.scalar_type(), at::kFloat);
        EXPECT_TRUE(tensors_near(out.mean, r(p + "mean"), kRtol32, kAtol32, p + "mean f32"));
        EXPECT_TRUE(tensors_near(out.log_variance, r(p + "log_variance"), kRtol32, kAtol32, p + "log_variance f32"));
        EXPECT_TRUE(tensors_near(out.pred_xstart, r(p + "pred_xstart"), kRtol32, kAtol32, p + "pred_xstart f32"));
      }
    }
  }
}

TEST_F(Core, ModelFnPathEqualsOutputPath) {
  const GaussianDiffusion d = core("v", "learned-range");
  const PMeanVariance a = d.p_mean_variance(fixed(r("out2")), r("x_t"), r("t"), true);
  const PMeanVariance b = d.p_mean_variance_from_output(r("out2"), r("x_t"), r("t"), true);
  EXPECT_TRUE(at::equal(a.mean, b.mean));
  EXPECT_TRUE(at::equal(a.log_variance, b.log_variance));
}

// The predictions invert the forward process: x_t built from (x_0, eps) gives x_0 back.
TEST_F(Core, PredictionsInvertTheForwardProcess) {
  const GaussianDiffusion d = core();
  const at::Tensor x0 = r("x_start"), eps = r("noise"), t = r("t"), x_t = r("x_t");
  EXPECT_TRUE(tensors_near(d.predict_xstart_from_eps(x_t, t, eps), x0, 1e-9, 1e-9, "x0 from eps"));
  EXPECT_TRUE(tensors_near(d.predict_xstart_from_v(x_t, t, d.v_target(x0, t, eps)), x0, 1e-12, 1e-12, "x0 from v"));
  EXPECT_TRUE(tensors_near(d.predict_eps_from_xstart(x_t, t, x0), eps, 1e-9, 1e-9, "eps from x0"));
  const at::Tensor xprev_mean = d.q_posterior_mean_variance(x0, x_t, t).mean;
  EXPECT_TRUE(tensors_near(d.predict_xstart_from_xprev(x_t, t, xprev_mean), x0, 1e-9, 1e-9, "x0 from x_{t-1}"));
}

TEST_F(Core, WrongOutputChannelsNameTheShapes) {
  const GaussianDiffusion d = core("eps", "learned-range");
  const std::string msg = error_of([&] { d.p_mean_variance_from_output(r("out1"), r("x_t"), r("t"), false); });
  EXPECT_TRUE(contains(
      msg, "model output has shape [8, 2, 3, 3], expected [8, 4, 3, 3] for variance type learned-range"));
}

}  // namespace
}  // namespace ddpm::diffusion::testing
