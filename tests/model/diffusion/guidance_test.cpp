// Classifier guidance in closed form: a classifier with linear logits W x + b + c t, whose
// gradient grad_x log p(y | x) = W_y - softmax(logits)^T W is known exactly. classifier_cond_fn
// against it; the guided ancestral step equals the unguided one plus s * Sigma * grad
// (condition_mean) and the guided DDIM step equals DDIM with eps - sqrt(1 - abar) s grad
// (condition_score), on a respaced diffusion whose classifier must see the original t. float64.
#include <ATen/ATen.h>

#include <vector>

#include "ddpm/model/diffusion/gaussian_diffusion.h"
#include "ddpm/model/diffusion/respace.h"
#include "ddpm/model/diffusion/schedule.h"
#include "testing/testing.h"

namespace ddpm::diffusion::testing {
namespace {

using ddpm::testing::tensors_near;

constexpr int64_t kN = 4, kC = 2, kH = 3, kW = 3, kD = kC * kH * kW, kK = 3;

struct LinearClassifier {
  at::Tensor W, b, c;  // (K, D), (K), (K)
  std::vector<at::Tensor>* seen_t = nullptr;
  // logits (N, K) = x.flatten W^T + b + c t
  at::Tensor operator()(const at::Tensor& x, const at::Tensor& t) const {
    if (seen_t) seen_t->push_back(t.clone());
    return at::matmul(x.flatten(1), W.t()) + b + t.to(at::kDouble).unsqueeze(1) * c;
  }
  // The exact grad_x log softmax(logits)[y]: W_y - p^T W, (N, C, H, W).
  at::Tensor grad(const at::Tensor& x, const at::Tensor& t, const at::Tensor& y) const {
    const at::Tensor p = at::softmax((*this)(x, t), 1);                 // (N, K)
    return (W.index_select(0, y) - at::matmul(p, W)).reshape(x.sizes());  // (N, C, H, W)
  }
};

class Guidance : public ::testing::Test {
 protected:
  void SetUp() override {
    at::manual_seed(21);
    clf.W = at::randn({kK, kD}, at::kDouble) * 0.3;
    clf.b = at::randn({kK}, at::kDouble);
    clf.c = at::randn({kK}, at::kDouble) * 0.01;
    x = at::randn({kN, kC, kH, kW}, at::kDouble);
    y = at::tensor(std::vector<int64_t>{0, 2, 1, 2}, at::kLong);
    // A fixed network output with learned-range variances: eps and v in [-1, 1].
    out = at::cat({at::randn({kN, kC, kH, kW}, at::kDouble), at::rand({kN, kC, kH, kW}, at::kDouble) * 2 - 1}, 1);
  }
  ModelFn fixed() const {
    return [o = out](const at::Tensor&, const at::Tensor&) { return o; };
  }
  LogitsFn logits(std::vector<at::Tensor>* seen = nullptr) {
    LinearClassifier c = clf;
    c.seen_t = seen;
    return c;
  }
  // T = 10 respaced to 4 kept steps: step i has original index kept[i].
  static GaussianDiffusion spaced(ModelVarType var) {
    return make_spaced_diffusion(get_named_beta_schedule("cosine", 10), {0, 3, 7, 9}, ModelMeanType::kEpsilon, var,
                                 LossType::kMse);
  }

  LinearClassifier clf;
  at::Tensor x, y, out;
};

TEST_F(Guidance, CondFnIsTheScaledGradientOfLogSoftmax) {
  const at::Tensor t = at::tensor(std::vector<int64_t>{0, 3, 7, 9}, at::kLong);
  for (double s : {0.0, 1.0, 3.0, 10.0}) {
    const CondFn fn = classifier_cond_fn(logits(), y, s);
    at::NoGradGuard no_grad;  // as the samplers call it
    EXPECT_TRUE(tensors_near(fn(x, t), s * clf.grad(x, t, y), 1e-12, 1e-14, "cond_fn scale " + std::to_string(s)));
  }
}

TEST_F(Guidance, AncestralMeanShiftsBySigmaTimesScaledGradientAtTheOriginalT) {
  const at::Tensor t = at::tensor(std::vector<int64_t>{3, 2, 1, 0}, at::kLong);  // respaced steps
  const at::Tensor original = at::tensor(std::vector<int64_t>{9, 7, 3, 0}, at::kLong);
  const at::Tensor noise = at::randn_like(x);
  for (ModelVarType var : {ModelVarType::kLearnedRange, ModelVarType::kFixedLarge}) {
    const GaussianDiffusion d = spaced(var);
    const ModelFn model = var == ModelVarType::kLearnedRange
                              ? fixed()
                              : ModelFn([o = out.slice(1, 0, kC)](const at::Tensor&, const at::Tensor&) { return o; });
    const PMeanVariance pm = d.p_mean_variance(model, x, t, true);
    const double s = 3.0;
    std::vector<at::Tensor> seen;
    const SampleStep guided = d.p_sample(model, x, t, true, std::nullopt, noise, classifier_cond_fn(logits(&seen), y, s));
    const SampleStep plain = d.p_sample(model, x, t, true, std::nullopt, noise);
    ASSERT_EQ(seen.size(), 1u);
    EXPECT_TRUE(at::equal(seen[0], original)) << "the classifier must see the original timesteps, got " << seen[0];
    // x_{t-1} = mu + Sigma s grad + sigma z (no noise at t = 0): the samples differ by Sigma s grad.
    const at::Tensor want = s * pm.variance * clf.grad(x, original, y);
    EXPECT_TRUE(tensors_near(guided.sample - plain.sample, want, 1e-10, 1e-13, "ancestral shift " + to_string(var)));
    EXPECT_GT(want.abs().max().item<double>(), 1e-3) << "the shift must be visible";
    EXPECT_TRUE(at::equal(guided.pred_xstart, plain.pred_xstart));
  }
}

TEST_F(Guidance, DdimUsesTheShiftedEps) {
  const GaussianDiffusion d = spaced(ModelVarType::kLearnedRange);
  const at::Tensor t = at::tensor(std::vector<int64_t>{3, 2, 1, 1}, at::kLong);
  const at::Tensor original = at::tensor(std::vector<int64_t>{9, 7, 3, 3}, at::kLong);
  const at::Tensor eps = out.slice(1, 0, kC);
  const at::Tensor abar = d.extract(d.arrays().alphas_cumprod, t, x);
  const at::Tensor abar_prev = d.extract(d.arrays().alphas_cumprod_prev, t, x);
  for (double s : {0.0, 1.0, 10.0}) {
    const SampleStep got = d.ddim_sample(fixed(), x, t, /*clip_denoised=*/false, 0.0, std::nullopt, at::zeros_like(x),
                                         classifier_cond_fn(logits(), y, s));
    // eps' = eps - sqrt(1 - abar) s grad; x_0 = (x - sqrt(1 - abar) eps') / sqrt(abar);
    // x_prev = sqrt(abar_prev) x_0 + sqrt(1 - abar_prev) eps'.
    const at::Tensor eps_g = eps - at::sqrt(1 - abar) * s * clf.grad(x, original, y);
    const at::Tensor x0 = (x - at::sqrt(1 - abar) * eps_g) / at::sqrt(abar);
    const at::Tensor want = at::sqrt(abar_prev) * x0 + at::sqrt(1 - abar_prev) * eps_g;
    EXPECT_TRUE(tensors_near(got.pred_xstart, x0, 1e-10, 1e-12, "DDIM x_0, scale " + std::to_string(s)));
    EXPECT_TRUE(tensors_near(got.sample, want, 1e-10, 1e-12, "DDIM x_prev, scale " + std::to_string(s)));
  }
}

// The loops pass opts.cond_fn to every step: a guided loop is the chain of guided steps.
TEST_F(Guidance, LoopsApplyTheCondFnAtEveryStep) {
  const GaussianDiffusion d = spaced(ModelVarType::kLearnedRange);
  const ModelFn model = [](const at::Tensor& xt, const at::Tensor&) { return at::cat({0.3 * xt, at::tanh(xt)}, 1); };
  SampleOptions o;
  o.noise = x;
  o.eta = 0.0;
  std::vector<at::Tensor> seen;
  o.cond_fn = classifier_cond_fn(logits(&seen), y, 2.0);
  const at::Tensor got = d.ddim_sample_loop(model, x.sizes(), at::kDouble, o);
  ASSERT_EQ(seen.size(), 4u);
  EXPECT_EQ(seen.front()[0].item<int64_t>(), 9);
  EXPECT_EQ(seen.back()[0].item<int64_t>(), 0);
  at::Tensor chain = x;
  for (int64_t i = 3; i >= 0; --i) {
    chain = d.ddim_sample(model, chain, at::full({kN}, i, at::kLong), true, 0.0, std::nullopt, at::zeros_like(x),
                          classifier_cond_fn(logits(), y, 2.0))
                .sample;
  }
  EXPECT_TRUE(at::equal(got, chain));
  o.cond_fn = nullptr;
  EXPECT_FALSE(at::equal(got, d.ddim_sample_loop(model, x.sizes(), at::kDouble, o)));
}

}  // namespace
}  // namespace ddpm::diffusion::testing
