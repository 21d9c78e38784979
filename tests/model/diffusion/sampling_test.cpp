// One ancestral step and one DDIM step (eta 0 and 0.5) and a DDIM inversion step with fixed noise
// against tests/reference/diffusion_reference.py; the loops against chains of single steps, their
// reproducibility from a seed, and the progress callback.
#include <ATen/CPUGeneratorImpl.h>

#include "diffusion_golden.h"

namespace ddpm::diffusion::testing {
namespace {

class Sampling : public DiffusionGolden {};

TEST_F(Sampling, AncestralStepEveryCombination) {
  for (const char* m : kMeans) {
    for (const char* v : kVars) {
      const GaussianDiffusion d = core(m, v);
      const std::string p = std::string("ps.") + m + "." + v + ".sample";
      const SampleStep s = d.p_sample(fixed(output_for(v)), r("x_t"), r("t"), true, std::nullopt, r("noise2"));
      EXPECT_TRUE(tensors_near(s.sample, r(p), kRtol64, kAtol64, p));
      if (std::string(m) == "eps" && std::string(v) == "learned-range") {
        const SampleStep s32 = d.p_sample(fixed(output_for(v)), r("x_t").to(at::kFloat), r("t"), true, std::nullopt,
                                          r("noise2").to(at::kFloat));
        EXPECT_TRUE(tensors_near(s32.sample, r(p), kRtol32, kAtol32, p + " f32"));
      }
    }
  }
}

TEST_F(Sampling, DdimStepAndInversionStep) {
  for (const char* m : kMeans) {
    const GaussianDiffusion d = core(m, "fixed-small");
    for (const char* eta : {"0.0", "0.5"}) {
      const std::string p = std::string("ddim.") + m + "." + eta + ".sample";
      const SampleStep s = d.ddim_sample(fixed(r("out1")), r("x_t"), r("t"), true, std::stod(eta), std::nullopt,
                                         r("noise2"));
      EXPECT_TRUE(tensors_near(s.sample, r(p), kRtol64, kAtol64, p));
    }
    const std::string p = std::string("ddimrev.") + m + ".sample";
    EXPECT_TRUE(tensors_near(d.ddim_reverse_sample(fixed(r("out1")), r("x_t"), r("t"), true).sample, r(p), kRtol64,
                             kAtol64, p));
  }
  EXPECT_THROW(core().ddim_reverse_sample(fixed(r("out1")), r("x_t"), r("t"), true, 0.5), std::invalid_argument);
}

// A small deterministic network and diffusion for the loops.
at::Tensor toy_model(const at::Tensor& x, const at::Tensor& t) {
  return 0.5 * at::tanh(x) + 0.01 * t.to(x.dtype()).view({-1, 1, 1, 1});
}
GaussianDiffusion toy_diffusion() {
  return GaussianDiffusion(get_named_beta_schedule("cosine", 8), ModelMeanType::kEpsilon, ModelVarType::kFixedLarge,
                           LossType::kMse);
}

TEST_F(Sampling, AncestralLoopIsAChainOfStepsAndReproducible) {
  const GaussianDiffusion d = toy_diffusion();
  std::vector<std::pair<int64_t, int64_t>> progress;
  SampleOptions opts;
  opts.generator = at::detail::createCPUGenerator(7);
  opts.progress = [&](int64_t done, int64_t total) { progress.emplace_back(done, total); };
  const at::Tensor a = d.p_sample_loop(toy_model, {2, 1, 4, 4}, at::kDouble, opts);
  ASSERT_EQ(progress.size(), 8u);
  EXPECT_EQ(progress.front(), (std::pair<int64_t, int64_t>{1, 8}));
  EXPECT_EQ(progress.back(), (std::pair<int64_t, int64_t>{8, 8}));

  // The same seed gives the same samples; the loop is x_T ~ N(0, I) then steps T-1 .. 0.
  at::Generator gen = at::detail::createCPUGenerator(7);
  at::Tensor x = at::randn({2, 1, 4, 4}, gen, at::kDouble);
  for (int64_t i = 7; i >= 0; --i) x = d.p_sample(toy_model, x, at::full({2}, i, at::kLong), true, gen).sample;
  EXPECT_TRUE(at::equal(a, x));
  SampleOptions other;
  other.generator = at::detail::createCPUGenerator(8);
  EXPECT_FALSE(at::equal(a, d.p_sample_loop(toy_model, {2, 1, 4, 4}, at::kDouble, other)));
}

TEST_F(Sampling, DdimLoopsFromGivenNoise) {
  const GaussianDiffusion d = toy_diffusion();
  const at::Tensor x_T = at::randn({2, 1, 4, 4}, at::detail::createCPUGenerator(3), at::kDouble);
  SampleOptions opts;
  opts.noise = x_T;
  const at::Tensor a = d.ddim_sample_loop(toy_model, {2, 1, 4, 4}, at::kDouble, opts);
  at::Tensor x = x_T;
  for (int64_t i = 7; i >= 0; --i) {
    x = d.ddim_sample(toy_model, x, at::full({2}, i, at::kLong), true, 0.0, std::nullopt, at::zeros_like(x)).sample;
  }
  EXPECT_TRUE(at::equal(a, x));
  // Inversion: x_0 -> x_T by steps 0 .. T-1.
  at::Tensor y = a;
  for (int64_t i = 0; i < 8; ++i) y = d.ddim_reverse_sample(toy_model, y, at::full({2}, i, at::kLong), true).sample;
  EXPECT_TRUE(at::equal(d.ddim_reverse_sample_loop(toy_model, a, opts), y));
  // eta > 0 draws noise from the generator: reproducible from the seed.
  SampleOptions noisy = opts;
  noisy.eta = 1.0;
  noisy.generator = at::detail::createCPUGenerator(5);
  const at::Tensor b1 = d.ddim_sample_loop(toy_model, {2, 1, 4, 4}, at::kDouble, noisy);
  noisy.generator = at::detail::createCPUGenerator(5);
  EXPECT_TRUE(at::equal(b1, d.ddim_sample_loop(toy_model, {2, 1, 4, 4}, at::kDouble, noisy)));
  EXPECT_FALSE(at::equal(b1, a));
}

}  // namespace
}  // namespace ddpm::diffusion::testing
