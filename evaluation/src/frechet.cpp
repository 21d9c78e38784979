// Frechet distance between Gaussians in float64; see ddpm/evaluation/frechet.h.
#include "ddpm/evaluation/frechet.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>

namespace ddpm::evaluation {
namespace {

// Symmetric PSD square root A^{1/2} = V diag(sqrt(max(w, 0))) V^T.   (D, D)
at::Tensor psd_sqrt(const at::Tensor& a) {
  auto [w, v] = at::linalg_eigh(a);  // w (D), v (D, D)
  return at::matmul(v * w.clamp_min(0.0).sqrt().unsqueeze(0), v.transpose(0, 1));
}

at::Tensor as_f64_symmetric(const at::Tensor& s, const char* name) {
  TORCH_CHECK(s.dim() == 2 && s.size(0) == s.size(1), "frechet: ", name,
              " must be a square (D, D) covariance, got shape ", s.sizes());
  const at::Tensor d = s.to(at::kCPU, at::kDouble);
  return 0.5 * (d + d.transpose(0, 1));  // remove rounding asymmetry of accumulated covariances
}

}  // namespace

double trace_sqrt_product(const at::Tensor& sigma1, const at::Tensor& sigma2) {
  const at::Tensor s1 = as_f64_symmetric(sigma1, "sigma1");  // (D, D)
  const at::Tensor s2 = as_f64_symmetric(sigma2, "sigma2");  // (D, D)
  TORCH_CHECK(s1.sizes() == s2.sizes(), "frechet: covariances differ in size: ", s1.sizes(), " vs ",
              s2.sizes());
  const at::Tensor r1 = psd_sqrt(s1);
  at::Tensor m = at::matmul(at::matmul(r1, s2), r1);  // sqrt(S1) S2 sqrt(S1), symmetric PSD
  m = 0.5 * (m + m.transpose(0, 1));
  const at::Tensor w = at::linalg_eigvalsh(m);  // (D)
  return w.clamp_min(0.0).sqrt().sum().item<double>();
}

double frechet_distance(const at::Tensor& mu1, const at::Tensor& sigma1,
                        const at::Tensor& mu2, const at::Tensor& sigma2) {
  TORCH_CHECK(mu1.dim() == 1 && mu1.sizes() == mu2.sizes(), "frechet: means must be (D) and equal in size, got ",
              mu1.sizes(), " and ", mu2.sizes());
  TORCH_CHECK(sigma1.dim() == 2 && sigma1.size(0) == mu1.size(0), "frechet: sigma1 ", sigma1.sizes(),
              " does not match mu (", mu1.size(0), ")");
  const at::Tensor diff = mu1.to(at::kCPU, at::kDouble) - mu2.to(at::kCPU, at::kDouble);
  const double tr1 = as_f64_symmetric(sigma1, "sigma1").trace().item<double>();
  const double tr2 = as_f64_symmetric(sigma2, "sigma2").trace().item<double>();
  const double d2 = diff.dot(diff).item<double>() + tr1 + tr2 - 2.0 * trace_sqrt_product(sigma1, sigma2);
  return std::max(d2, 0.0);
}

}  // namespace ddpm::evaluation
