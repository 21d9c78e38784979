// EmaSet (several rates, optional warmup, state save/restore) against
// tests/reference/ema_reference.py (float64 numpy).
#include <ATen/ATen.h>

#include "ddpm/trainer/ema.h"
#include "testing/testing.h"

namespace {
using ddpm::model::TensorDict;

class EmaSetGolden : public ::testing::Test {
 protected:
  ddpm::data::H5TensorFile g = ddpm::testing::golden("ema");
  at::Tensor r(const std::string& n) { return g.read(n); }
  std::vector<double> rates() {
    const at::Tensor t = r("rates");
    return {t[0].item<double>(), t[1].item<double>(), t[2].item<double>()};
  }
  TensorDict named(const std::string& prefix) {
    return {{"a.weight", r(prefix + "0")}, {"b.bias", r(prefix + "1")}, {"c.weight", r(prefix + "2")}};
  }
  std::vector<at::Tensor> params(int k) {
    std::vector<at::Tensor> out;
    for (const auto& [n, t] : named("param_" + std::to_string(k) + "_")) out.push_back(t);
    return out;
  }
  void run_and_check(bool warmup) {
    ddpm::trainer::EmaSet set(rates(), warmup, named("init_"));
    for (int k = 1; k <= 6; ++k) set.update(params(k), k);
    for (size_t j = 0; j < 3; ++j) {
      const TensorDict state = set.state(j);
      for (int i = 0; i < 3; ++i) {
        const std::string name = "ema_r" + std::to_string(j) + "_w" + std::to_string(warmup) + "_" + std::to_string(i);
        EXPECT_TRUE(ddpm::testing::tensors_near(state[i].second, r(name), 1e-13, 1e-14, name));
      }
    }
  }
};

TEST_F(EmaSetGolden, ThreeRatesNoWarmup) { run_and_check(false); }
TEST_F(EmaSetGolden, ThreeRatesWithWarmup) { run_and_check(true); }

TEST_F(EmaSetGolden, WarmupRateFormula) {
  ddpm::trainer::EmaSet set({0.9999}, true, named("init_"));
  EXPECT_DOUBLE_EQ(set.effective_rate(0.9999, 1), 2.0 / 11.0);
  EXPECT_DOUBLE_EQ(set.effective_rate(0.9999, 1000), 1001.0 / 1010.0);
  EXPECT_DOUBLE_EQ(set.effective_rate(0.5, 1000), 0.5);
  ddpm::trainer::EmaSet plain({0.9999}, false, named("init_"));
  EXPECT_DOUBLE_EQ(plain.effective_rate(0.9999, 1), 0.9999);
}

// Saving after 3 updates and restoring into a fresh set continues exactly like the original.
TEST_F(EmaSetGolden, StateRestoreContinuesIdentically) {
  ddpm::trainer::EmaSet a(rates(), true, named("init_"));
  for (int k = 1; k <= 3; ++k) a.update(params(k), k);
  ddpm::trainer::EmaSet b(rates(), true, named("param_6_"));
  for (size_t j = 0; j < 3; ++j) {
    TensorDict copy;
    for (const auto& [n, t] : a.state(j)) copy.emplace_back(n, t.clone());
    b.load_state(j, copy, "saved ema");
  }
  for (int k = 4; k <= 6; ++k) {
    a.update(params(k), k);
    b.update(params(k), k);
  }
  for (size_t j = 0; j < 3; ++j) {
    for (int i = 0; i < 3; ++i) {
      EXPECT_TRUE(ddpm::testing::tensors_near(b.state(j)[i].second, a.state(j)[i].second, 0, 0, "restored"));
    }
  }
}

TEST_F(EmaSetGolden, LoadStateNamesTheMismatch) {
  ddpm::trainer::EmaSet set({0.9}, false, named("init_"));
  TensorDict wrong = named("init_");
  wrong[1].first = "b.other";
  try {
    set.load_state(0, wrong, "ema_0.9.pt");
    FAIL() << "mismatch accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("b.other"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("ema_0.9.pt"), std::string::npos) << e.what();
  }
  EXPECT_THROW(set.update({}, 1), std::invalid_argument);
}

TEST(EmaSet, RateNamesRoundTrip) {
  EXPECT_EQ(ddpm::trainer::EmaSet::rate_name(0.9999), "0.9999");
  EXPECT_EQ(ddpm::trainer::EmaSet::rate_name(0.999), "0.999");
  EXPECT_EQ(ddpm::trainer::EmaSet::rate_name(0.5), "0.5");
}
}  // namespace
