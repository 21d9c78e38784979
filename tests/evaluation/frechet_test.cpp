// ddpm::evaluation::frechet_distance against scipy.linalg.sqrtm (tests/reference/frechet_reference.py),
// including rank-deficient covariances; within 1e-6 relative.
#include <ATen/ATen.h>

#include <cmath>

#include "ddpm/evaluation/frechet.h"
#include "testing/testing.h"

namespace {

TEST(Frechet, MatchesScipySqrtmOnKnownMatrices) {
  auto g = ddpm::testing::golden("frechet");
  for (const char* c : {"full8", "full64", "rank_deficient16", "one_singular32", "diag"}) {
    const std::string n = c;
    const double want = g.read(n + "/d").item<double>();
    const double got = ddpm::evaluation::frechet_distance(g.read(n + "/mu1"), g.read(n + "/s1"), g.read(n + "/mu2"), g.read(n + "/s2"));
    const double rel = std::abs(got - want) / std::abs(want);
    std::printf("[maxdiff] frechet %s: got %.12g want %.12g rel %.2e (rtol 1e-6)\n", c, got, want, rel);
    EXPECT_LE(rel, 1e-6) << c;
    // float32 inputs are promoted to float64 before any arithmetic.
    const double got32 = ddpm::evaluation::frechet_distance(g.read(n + "/mu1").to(at::kFloat), g.read(n + "/s1"),
                                                     g.read(n + "/mu2"), g.read(n + "/s2"));
    EXPECT_LE(std::abs(got32 - want) / std::abs(want), 1e-5) << c;
  }
}

TEST(Frechet, SameGaussianIsZeroAndSymmetric) {
  auto g = ddpm::testing::golden("frechet");
  const at::Tensor mu = g.read("rank_deficient16/mu1"), s = g.read("rank_deficient16/s1");
  const double same = ddpm::evaluation::frechet_distance(mu, s, mu, s);
  std::printf("[maxdiff] frechet same gaussian (rank 5 of 16): %.3e\n", same);
  EXPECT_LE(same, 1e-8 * s.trace().item<double>());
  const at::Tensor mu2 = g.read("full8/mu2"), s2 = g.read("full8/s2"), mu1 = g.read("full8/mu1"), s1 = g.read("full8/s1");
  EXPECT_NEAR(ddpm::evaluation::frechet_distance(mu1, s1, mu2, s2), ddpm::evaluation::frechet_distance(mu2, s2, mu1, s1),
              1e-9 * ddpm::evaluation::frechet_distance(mu1, s1, mu2, s2));
}

TEST(Frechet, RejectsBadShapes) {
  const at::Tensor mu = at::zeros({3}, at::kDouble), s = at::eye(3, at::kDouble);
  EXPECT_THROW(ddpm::evaluation::frechet_distance(mu, s, at::zeros({4}, at::kDouble), at::eye(4, at::kDouble)), c10::Error);
  EXPECT_THROW(ddpm::evaluation::frechet_distance(mu, at::zeros({3, 2}, at::kDouble), mu, s), c10::Error);
}

}  // namespace
