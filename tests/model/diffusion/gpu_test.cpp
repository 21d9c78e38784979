// The diffusion core on a CUDA device (label gpu; skips without one): the float32 losses and an
// ancestral step against the float64 reference, seeded sampling loops, timestep samples on device.
#include <ATen/Context.h>

#include "ddpm/model/diffusion/timestep_sampler.h"
#include "diffusion_golden.h"

namespace ddpm::diffusion::testing {
namespace {

class Gpu : public DiffusionGolden {
 protected:
  at::Tensor cuda(const char* name, at::ScalarType dtype = at::kFloat) const {
    const at::Tensor x = r(name);
    return x.to(c10::Device(at::kCUDA), x.is_floating_point() ? dtype : x.scalar_type());
  }
};

TEST_F(Gpu, HybridLossAndAncestralStepMatchTheReference) {
  DDPM_REQUIRE_CUDA();
  const GaussianDiffusion d = core("eps", "learned-range", "rescaled-mse");
  const at::Tensor x_t = d.q_sample(cuda("x_start"), cuda("t"), cuda("noise"));
  EXPECT_TRUE(x_t.is_cuda());
  EXPECT_TRUE(tensors_near(x_t, r("x_t"), kRtol32, kAtol32, "q_sample cuda f32"));
  const LossTerms got = d.training_losses_from_output(cuda("out2"), cuda("x_start"), x_t, cuda("t"), cuda("noise"));
  const at::Tensor rows = (r("t") > 0).nonzero().squeeze(1);  // t = 0: see losses_test.cpp
  const std::string p = "tl.eps.learned-range.rescaled-mse.";
  EXPECT_TRUE(tensors_near(got.mse.cpu(), r(p + "mse"), kRtol32, kAtol32, "mse cuda f32"));
  EXPECT_TRUE(tensors_near(got.vb.cpu().index_select(0, rows), r(p + "vb").index_select(0, rows), kRtol32, kAtol32,
                           "vb cuda f32 (t > 0)"));
  const SampleStep s = d.p_sample(fixed(cuda("out2")), cuda("x_t"), cuda("t"), true, std::nullopt, cuda("noise2"));
  EXPECT_TRUE(tensors_near(s.sample, r("ps.eps.learned-range.sample"), kRtol32, kAtol32, "p_sample cuda f32"));
}

TEST_F(Gpu, SeededLoopsAreReproducible) {
  DDPM_REQUIRE_CUDA();
  const GaussianDiffusion d(get_named_beta_schedule("cosine", 8), ModelMeanType::kEpsilon, ModelVarType::kFixedLarge,
                            LossType::kMse);
  const ModelFn model = [](const at::Tensor& x, const at::Tensor& t) {
    return 0.5 * at::tanh(x) + 0.01 * t.to(x.dtype()).view({-1, 1, 1, 1});
  };
  at::Generator gen = at::globalContext().defaultGenerator(c10::Device(at::kCUDA, 0));
  SampleOptions opts;
  opts.generator = gen;
  const auto options = at::TensorOptions().dtype(at::kFloat).device(at::kCUDA);
  gen.set_current_seed(5);
  const at::Tensor a = d.p_sample_loop(model, {2, 1, 4, 4}, options, opts);
  gen.set_current_seed(5);
  EXPECT_TRUE(at::equal(a, d.p_sample_loop(model, {2, 1, 4, 4}, options, opts)));
  EXPECT_TRUE(a.is_cuda());
  opts.noise = a;
  const at::Tensor b = d.ddim_sample_loop(model, {2, 1, 4, 4}, options, opts);
  const at::Tensor b_cpu = d.ddim_sample_loop(model, {2, 1, 4, 4}, at::kFloat, [&] {
    SampleOptions o = opts;
    o.noise = a.cpu();
    return o;
  }());
  EXPECT_TRUE(tensors_near(b, b_cpu, 1e-5, 1e-5, "ddim loop cuda vs cpu"));

  LossSecondMomentResampler sampler(6);
  const TimestepSample ts = sampler.sample(16, std::nullopt, c10::Device(at::kCUDA));
  EXPECT_TRUE(ts.t.is_cuda() && ts.weights.is_cuda());
}

}  // namespace
}  // namespace ddpm::diffusion::testing
