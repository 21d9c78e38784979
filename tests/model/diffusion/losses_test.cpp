// Training losses for every loss x mean x variance type from a fixed network output and fixed
// noise, the stop-gradient of the hybrid loss, and bits/dim on a tiny case, against
// tests/reference/diffusion_reference.py.
#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>

#include "diffusion_golden.h"

namespace ddpm::diffusion::testing {
namespace {

class Losses : public DiffusionGolden {
 protected:
  // Compares the rows `rows` (all when undefined) of loss, mse and vb with the reference.
  void expect_terms(const LossTerms& got, const std::string& p, double rtol, double atol, const std::string& tag,
                    const at::Tensor& rows = {}) {
    const auto pick = [&](const at::Tensor& x) { return rows.defined() ? x.index_select(0, rows) : x; };
    EXPECT_TRUE(tensors_near(pick(got.loss), pick(r(p + "loss")), rtol, atol, p + "loss" + tag));
    for (const auto& [name, tensor] : {std::pair{"mse", got.mse}, std::pair{"vb", got.vb}}) {
      ASSERT_EQ(tensor.defined(), has(p + name)) << p << name << ": defined here but not in the reference, or back";
      if (tensor.defined()) {
        EXPECT_TRUE(tensors_near(pick(tensor), pick(r(p + name)), rtol, atol, p + name + tag));
      }
    }
  }
};

TEST_F(Losses, EveryLossMeanAndVarianceType) {
  for (const char* l : kLosses) {
    for (const char* m : kMeans) {
      for (const char* v : kVars) {
        const GaussianDiffusion d = core(m, v, l);
        const std::string p = std::string("tl.") + m + "." + v + "." + l + ".";
        expect_terms(d.training_losses_from_output(output_for(v), r("x_start"), r("x_t"), r("t"), r("noise")), p,
                     kRtol64, kAtol64, "");
      }
    }
  }
}

// The float32 path against the float64 reference, for t > 0. At t = 0 the decoder NLL of a random
// network output lies tens of sigmas out in the tails of the discretized Gaussian, where
// log(cdf_plus - cdf_min) keeps no digits in float32 (in any implementation); the float64 test
// covers t = 0, and here the float32 value must only be finite.
TEST_F(Losses, EveryLossMeanAndVarianceTypeFloat32) {
  const auto f = [this](const char* n) { return r(n).to(at::kFloat); };
  const at::Tensor positive_t = (r("t") > 0).nonzero().squeeze(1);
  for (const char* l : kLosses) {
    for (const char* m : kMeans) {
      for (const char* v : kVars) {
        const GaussianDiffusion d = core(m, v, l);
        const std::string p = std::string("tl.") + m + "." + v + "." + l + ".";
        const at::Tensor x_t = d.q_sample(f("x_start"), r("t"), f("noise"));
        const LossTerms got = d.training_losses_from_output(output_for(v).to(at::kFloat), f("x_start"), x_t, r("t"),
                                                            f("noise"));
        EXPECT_EQ(got.loss.scalar_type(), at::kFloat);
        // rescaled-kl is T * kl: the float32 cancellation error of normal_kl (~1e-7 absolute on values of
        // 1e-4 .. 1e-3 here) scales with T, and so does its absolute tolerance.
        const double atol = std::string(l) == "rescaled-kl" ? kAtol32 * d.num_timesteps() : kAtol32;
        expect_terms(got, p, kRtol32, atol, " f32 (t > 0)", positive_t);
        EXPECT_TRUE(at::isfinite(got.loss).all().item<bool>()) << p;
      }
    }
  }
}

// training_losses(model, ...) draws x_t itself and calls the network once on (x_t, t).
TEST_F(Losses, ModelFnPathCallsTheNetworkOnXt) {
  const GaussianDiffusion d = core("eps", "learned-range", "rescaled-mse");
  int calls = 0;
  const ModelFn model = [&](const at::Tensor& x, const at::Tensor& t) {
    ++calls;
    EXPECT_TRUE(tensors_near(x, r("x_t"), kRtol64, kAtol64, "x_t seen by the network"));
    EXPECT_TRUE(at::equal(t, r("t")));
    return r("out2");
  };
  expect_terms(d.training_losses(model, r("x_start"), r("t"), r("noise")), "tl.eps.learned-range.rescaled-mse.",
               kRtol64, kAtol64, " (model fn)");
  EXPECT_EQ(calls, 1);
}

// The hybrid loss: vb reaches only the variance half of the output, mse only the mean half;
// the full VLB (kl) trains both.
TEST_F(Losses, StopGradientOnTheMeanForVb) {
  const at::Tensor out = r("out2").clone().requires_grad_(true);  // (8, 4, 3, 3)
  const auto grads = [&](const at::Tensor& y) {
    const at::Tensor g = torch::autograd::grad({y.sum()}, {out}, {}, /*retain_graph=*/true)[0];
    return std::pair{g.narrow(1, 0, 2).abs().max().item<double>(), g.narrow(1, 2, 2).abs().max().item<double>()};
  };
  for (const char* l : {"mse", "rescaled-mse"}) {
    const LossTerms terms = core("eps", "learned-range", l)
                                .training_losses_from_output(out, r("x_start"), r("x_t"), r("t"), r("noise"));
    const auto [vb_mean, vb_var] = grads(terms.vb);
    EXPECT_EQ(vb_mean, 0.0) << l << ": vb must not train the mean";
    EXPECT_GT(vb_var, 1e-6) << l << ": vb must train the variance";
    const auto [mse_mean, mse_var] = grads(terms.mse);
    EXPECT_GT(mse_mean, 1e-6) << l;
    EXPECT_EQ(mse_var, 0.0) << l;
  }
  const LossTerms kl = core("eps", "learned-range", "kl")
                           .training_losses_from_output(out, r("x_start"), r("x_t"), r("t"), r("noise"));
  const auto [kl_mean, kl_var] = grads(kl.loss);
  EXPECT_GT(kl_mean, 1e-6);
  EXPECT_GT(kl_var, 1e-6);
}

// The network of the bits/dim case; identical to bpd_model in diffusion_reference.py.
at::Tensor bpd_model(const at::Tensor& x, const at::Tensor& t) {
  const at::Tensor tf = t.to(x.dtype()).view({-1, 1, 1, 1});
  return at::cat({0.8 * at::tanh(x) + 0.05 * tf, at::sin(x + 0.1 * tf)}, 1);
}

TEST_F(Losses, BitsPerDimOnATinyCase) {
  const GaussianDiffusion d(get_named_beta_schedule("cosine", 8), ModelMeanType::kEpsilon,
                            ModelVarType::kLearnedRange, LossType::kRescaledMse);
  const BpdTerms b = d.calc_bpd_loop(bpd_model, r("bpd.x_start"), /*clip_denoised=*/true, std::nullopt,
                                     r("bpd.noise"));
  EXPECT_TRUE(tensors_near(b.total_bpd, r("bpd.total_bpd"), kRtol64, kAtol64, "total_bpd"));
  EXPECT_TRUE(tensors_near(b.prior_bpd, r("bpd.prior_bpd"), kRtol64, kAtol64, "prior_bpd"));
  EXPECT_TRUE(tensors_near(b.vb, r("bpd.vb"), kRtol64, kAtol64, "vb (N, T)"));
  EXPECT_TRUE(tensors_near(b.xstart_mse, r("bpd.xstart_mse"), kRtol64, kAtol64, "xstart_mse (N, T)"));
  EXPECT_TRUE(tensors_near(b.mse, r("bpd.mse"), kRtol64, kAtol64, "mse (N, T)"));
}

// Several timesteps per network call (t_batch) give the same terms: against the golden values with
// given noise (3 does not divide T = 8; 8 is one call), and bit for bit the one-step loop's
// terms with noise drawn from a generator (the draws keep the one-step loop's order).
TEST_F(Losses, BitsPerDimWithSeveralTimestepsPerCall) {
  const GaussianDiffusion d(get_named_beta_schedule("cosine", 8), ModelMeanType::kEpsilon,
                            ModelVarType::kLearnedRange, LossType::kRescaledMse);
  for (int64_t k : {3, 8}) {
    const BpdTerms b = d.calc_bpd_loop(bpd_model, r("bpd.x_start"), true, std::nullopt, r("bpd.noise"), k);
    const std::string l = "t_batch " + std::to_string(k) + ": ";
    EXPECT_TRUE(tensors_near(b.total_bpd, r("bpd.total_bpd"), kRtol64, kAtol64, l + "total_bpd"));
    EXPECT_TRUE(tensors_near(b.vb, r("bpd.vb"), kRtol64, kAtol64, l + "vb (N, T)"));
    EXPECT_TRUE(tensors_near(b.xstart_mse, r("bpd.xstart_mse"), kRtol64, kAtol64, l + "xstart_mse (N, T)"));
    EXPECT_TRUE(tensors_near(b.mse, r("bpd.mse"), kRtol64, kAtol64, l + "mse (N, T)"));
  }
  const at::Tensor x = r("bpd.x_start");
  at::Generator g1 = at::make_generator<at::CPUGeneratorImpl>(5), g3 = at::make_generator<at::CPUGeneratorImpl>(5);
  const BpdTerms one = d.calc_bpd_loop(bpd_model, x, true, g1, {}, 1);
  const BpdTerms three = d.calc_bpd_loop(bpd_model, x, true, g3, {}, 3);
  EXPECT_TRUE(tensors_near(three.vb, one.vb, 0, 0, "drawn noise, t_batch 3 vs 1: vb (N, T)"));
  EXPECT_TRUE(tensors_near(three.total_bpd, one.total_bpd, 0, 0, "drawn noise, t_batch 3 vs 1: total_bpd"));
}

}  // namespace
}  // namespace ddpm::diffusion::testing
