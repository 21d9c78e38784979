// Shared fixture of the diffusion golden tests: the reference file and the core case of
// diffusion_reference.py (linear schedule, T = 100, a batch of 8 of shape (2, 3, 3)).
#pragma once
#include <ATen/ATen.h>

#include <exception>
#include <string>

#include "ddpm/model/diffusion/gaussian_diffusion.h"
#include "ddpm/model/diffusion/schedule.h"
#include "testing/testing.h"

namespace ddpm::diffusion::testing {

using ddpm::testing::tensors_near;

inline const char* kMeans[] = {"eps", "x0", "prev", "v"};
inline const char* kVars[] = {"fixed-small", "fixed-large", "learned", "learned-range"};
inline const char* kLosses[] = {"mse", "rescaled-mse", "kl", "rescaled-kl"};

constexpr double kRtol64 = 1e-12, kAtol64 = 1e-14;  // float64 paths
constexpr double kRtol32 = 1e-5, kAtol32 = 1e-5;    // float32 paths against the float64 reference

// The message of the exception f() throws, or "(no exception)".
template <typename F>
std::string error_of(F f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no exception)";
}

inline ::testing::AssertionResult contains(const std::string& s, const std::string& part) {
  if (s.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "'" << s << "' does not contain '" << part << "'";
}

class DiffusionGolden : public ::testing::Test {
 protected:
  data::H5TensorFile g = ddpm::testing::golden("diffusion");
  at::Tensor r(const std::string& name) const { return g.read(name); }
  bool has(const std::string& name) const { return g.has(name); }

  static GaussianDiffusion core(const std::string& mean = "eps", const std::string& var = "fixed-small",
                                const std::string& loss = "mse") {
    return GaussianDiffusion(get_named_beta_schedule("linear", 100), parse_mean_type(mean), parse_var_type(var),
                             parse_loss_type(loss));
  }
  // The fixed network output of the core case: C channels, or 2C for learned variances.
  at::Tensor output_for(const std::string& var) const {
    return r(var.rfind("learned", 0) == 0 ? "out2" : "out1");
  }
  static ModelFn fixed(const at::Tensor& out) {
    return [out](const at::Tensor& x, const at::Tensor&) { return out.to(x.dtype()); };
  }
};

}  // namespace ddpm::diffusion::testing
