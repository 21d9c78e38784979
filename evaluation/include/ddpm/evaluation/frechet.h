// Frechet distance between two Gaussians N(mu1, S1), N(mu2, S2) (Heusel et al. 2017, the FID):
//   d^2 = ||mu1 - mu2||^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^{1/2}),
// computed in float64 with the symmetric form Tr(sqrtm(sqrt(S1) S2 sqrt(S1))) via eigendecompositions.
#pragma once
#include <ATen/core/Tensor.h>

namespace ddpm::evaluation {

// Tr((S1 S2)^{1/2}) for symmetric positive semi-definite S1, S2 (D, D). S1 S2 has the same
// eigenvalues as sqrt(S1) S2 sqrt(S1), which is symmetric PSD, so the trace is the sum of the
// square roots of its eigenvalues; tiny negative eigenvalues from rounding (rank-deficient
// covariances) are clamped to 0. Inputs of any float dtype and device; returns a float64 scalar.
double trace_sqrt_product(const at::Tensor& sigma1, const at::Tensor& sigma2);

// The squared Frechet distance (what FID reports). mu (D), sigma (D, D).
double frechet_distance(const at::Tensor& mu1, const at::Tensor& sigma1,
                        const at::Tensor& mu2, const at::Tensor& sigma2);

}  // namespace ddpm::evaluation
