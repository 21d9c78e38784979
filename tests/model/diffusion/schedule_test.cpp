// Beta schedules, their derived arrays, betas from a file, respacing, and the error messages for
// bad names, against tests/reference/diffusion_reference.py.
#include <fstream>
#include <stdexcept>

#include "ddpm/model/diffusion/respace.h"
#include "diffusion_golden.h"

namespace ddpm::diffusion::testing {
namespace {

const char* kArrays[] = {"betas", "alphas_cumprod", "alphas_cumprod_prev", "alphas_cumprod_next",
                         "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod",
                         "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod", "posterior_variance",
                         "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2"};

at::Tensor array_named(const ScheduleArrays& a, const std::string& n) {
  const std::pair<const char*, const at::Tensor*> all[] = {
      {"betas", &a.betas}, {"alphas_cumprod", &a.alphas_cumprod}, {"alphas_cumprod_prev", &a.alphas_cumprod_prev},
      {"alphas_cumprod_next", &a.alphas_cumprod_next}, {"sqrt_alphas_cumprod", &a.sqrt_alphas_cumprod},
      {"sqrt_one_minus_alphas_cumprod", &a.sqrt_one_minus_alphas_cumprod},
      {"log_one_minus_alphas_cumprod", &a.log_one_minus_alphas_cumprod},
      {"sqrt_recip_alphas_cumprod", &a.sqrt_recip_alphas_cumprod},
      {"sqrt_recipm1_alphas_cumprod", &a.sqrt_recipm1_alphas_cumprod}, {"posterior_variance", &a.posterior_variance},
      {"posterior_log_variance_clipped", &a.posterior_log_variance_clipped},
      {"posterior_mean_coef1", &a.posterior_mean_coef1}, {"posterior_mean_coef2", &a.posterior_mean_coef2}};
  for (const auto& [name, t] : all)
    if (n == name) return *t;
  throw std::logic_error("no array " + n);
}

class Schedules : public DiffusionGolden {
 protected:
  void expect_arrays(const std::vector<double>& betas, const std::string& prefix) {
    const ScheduleArrays a = make_schedule_arrays(betas);
    for (const char* n : kArrays) {
      EXPECT_EQ(array_named(a, n).scalar_type(), at::kDouble);
      EXPECT_TRUE(tensors_near(array_named(a, n), r(prefix + n), kRtol64, 0.0, prefix + n));
    }
  }
  std::string betas_file() const { return ddpm::testing::binary_dir() + "/golden/diffusion_betas.txt"; }
};

TEST_F(Schedules, NamedSchedulesAndDerivedArrays) {
  for (const char* name : {"linear", "cosine", "sigmoid"}) {
    for (int64_t T : {50, 1000}) {
      expect_arrays(get_named_beta_schedule(name, T), "sched." + std::string(name) + "." + std::to_string(T) + ".");
    }
  }
}

TEST_F(Schedules, CosineAndSigmoidClipTheLastBeta) {
  for (const char* name : {"cosine", "sigmoid"}) {
    const std::vector<double> b = get_named_beta_schedule(name, 1000);
    EXPECT_EQ(b.back(), 0.999) << name;
  }
}

TEST_F(Schedules, BetasFromFile) {
  expect_arrays(get_named_beta_schedule("file:" + betas_file(), 30), "sched.file.30.");
  expect_arrays(get_named_beta_schedule("file:" + betas_file(), 0), "sched.file.30.");  // T from the file
}

TEST_F(Schedules, ErrorsNameTheProblem) {
  EXPECT_TRUE(contains(error_of([] { get_named_beta_schedule("quadratic", 10); }),
                     "unknown beta schedule 'quadratic'; known: linear, cosine, sigmoid, file:PATH"));
  EXPECT_TRUE(contains(error_of([] { get_named_beta_schedule("linear", 10); }), "use T >= 21"));
  EXPECT_TRUE(contains(error_of([] { get_named_beta_schedule("cosine", 1); }), "at least 2"));
  EXPECT_TRUE(contains(error_of([&] { get_named_beta_schedule("file:" + betas_file(), 31); }),
                     "has 30 betas but 31 steps were asked for"));
  const std::string dir = ddpm::testing::temp_dir("diffusion_schedule_errors");
  std::ofstream(dir + "/bad.txt") << "0.1\n\nabc\n";
  EXPECT_TRUE(contains(error_of([&] { get_named_beta_schedule("file:" + dir + "/bad.txt", 0); }),
                     "betas file '" + dir + "/bad.txt' line 3: 'abc' is not a number"));
  std::ofstream(dir + "/range.txt") << "# comment\n0.1\n1.5\n";
  EXPECT_TRUE(contains(error_of([&] { get_named_beta_schedule("file:" + dir + "/range.txt", 0); }),
                     "line 3: beta 1.5 is outside (0, 1)"));
  EXPECT_TRUE(contains(error_of([&] { get_named_beta_schedule("file:" + dir + "/missing.txt", 0); }), "cannot open"));
  EXPECT_TRUE(contains(error_of([] { parse_mean_type("epsilon"); }), "'epsilon'; expected one of eps|x0|prev|v"));
  EXPECT_TRUE(contains(error_of([] { parse_var_type("small"); }),
                     "expected one of fixed-small|fixed-large|learned|learned-range"));
  EXPECT_TRUE(contains(error_of([] { parse_loss_type("hybrid"); }), "expected one of mse|rescaled-mse|kl|rescaled-kl"));
  for (const char* m : kMeans) EXPECT_EQ(to_string(parse_mean_type(m)), m);
  for (const char* v : kVars) EXPECT_EQ(to_string(parse_var_type(v)), v);
  for (const char* l : kLosses) EXPECT_EQ(to_string(parse_loss_type(l)), l);
}

TEST_F(Schedules, GatherCastsToTheDtypeOfX) {
  const GaussianDiffusion d = core();
  const at::Tensor t = r("t");
  const at::Tensor x32 = at::zeros({8, 2, 3, 3}, at::kFloat);
  const at::Tensor c32 = d.extract(d.arrays().sqrt_alphas_cumprod, t, x32);
  EXPECT_EQ(c32.scalar_type(), at::kFloat);
  EXPECT_EQ(c32.sizes(), (std::vector<int64_t>{8, 1, 1, 1}));
  const at::Tensor c64 = d.extract(d.arrays().sqrt_alphas_cumprod, t, x32.to(at::kDouble));
  EXPECT_EQ(c64.scalar_type(), at::kDouble);
  EXPECT_TRUE(at::equal(c64.to(at::kFloat), c32));
}

TEST_F(Schedules, RespacedTimestepsAndBetas) {
  const std::vector<double> base = get_named_beta_schedule("linear", 1000);
  for (const char* spec : {"250", "10,15,20", "ddim25"}) {
    const std::vector<int64_t> keep = space_timesteps(1000, spec);
    const std::string p = std::string("respace.") + spec + ".";
    EXPECT_TRUE(at::equal(at::tensor(keep, at::kLong), r(p + "timesteps"))) << spec;
    const GaussianDiffusion d = make_spaced_diffusion(base, keep, ModelMeanType::kEpsilon, ModelVarType::kFixedSmall,
                                                      LossType::kMse);
    EXPECT_TRUE(tensors_near(d.arrays().betas, r(p + "betas"), kRtol64, 0.0, p + "betas"));
    EXPECT_EQ(d.timestep_map(), keep);
    EXPECT_EQ(d.num_timesteps(), static_cast<int64_t>(keep.size()));
  }
  EXPECT_EQ(space_timesteps(10, "").size(), 10u);
}

TEST_F(Schedules, RespacingErrors) {
  EXPECT_TRUE(contains(error_of([] { space_timesteps(10, "5,20"); }),
                     "section 1 has 5 of the 10 steps and cannot give 20"));
  EXPECT_TRUE(contains(error_of([] { space_timesteps(10, "ddim6"); }),
                     "no integer stride gives exactly 6 of 10 steps"));
  EXPECT_TRUE(contains(error_of([] { space_timesteps(10, "abc"); }), "'abc' is not a positive step count"));
  EXPECT_TRUE(contains(error_of([] { space_timesteps(10, "3,0"); }), "'0' is not a positive step count"));
}

// The network of a respaced diffusion sees original indices, rescaled to [0, 1000) on request.
TEST_F(Schedules, SpacedModelSeesOriginalTimesteps) {
  const std::vector<double> base = get_named_beta_schedule("linear", 100);
  for (bool rescale : {false, true}) {
    const GaussianDiffusion d = make_spaced_diffusion(base, space_timesteps(100, "ddim10"), ModelMeanType::kEpsilon,
                                                      ModelVarType::kFixedSmall, LossType::kMse, rescale);
    at::Tensor seen;
    const ModelFn model = [&seen](const at::Tensor& x, const at::Tensor& t) {
      seen = t;
      return at::zeros_like(x);
    };
    const at::Tensor t = at::arange(10, at::kLong);
    d.p_mean_variance(model, at::zeros({10, 1, 2, 2}, at::kDouble), t, true);
    const at::Tensor expected = at::arange(0, 100, 10, at::kLong);
    if (rescale) {
      EXPECT_EQ(seen.scalar_type(), at::kFloat);
      EXPECT_TRUE(at::equal(seen, expected.to(at::kFloat) * 10.0f));
    } else {
      EXPECT_TRUE(at::equal(seen, expected));
    }
  }
}

TEST_F(Schedules, FactoryBuildsARespacedDiffusion) {
  DiffusionConfig c;
  c.schedule = "cosine";
  c.steps = 1000;
  c.respacing = "ddim25";
  const GaussianDiffusion d = create_gaussian_diffusion(c);
  EXPECT_EQ(d.num_timesteps(), 25);
  EXPECT_EQ(d.timestep_map()[1], 40);
}

}  // namespace
}  // namespace ddpm::diffusion::testing
