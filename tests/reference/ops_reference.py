#!/usr/bin/env python3
"""Golden values for ddpm::ops, written from the equations (float64 numpy, no torch).

normal_kl, the tanh approximation of the standard normal CDF and the discretized Gaussian
log-likelihood (bins of width 2/255 on [-1, 1], edge bins open) as in Ho et al. 2020 and
Nichol & Dhariwal 2021. Inputs are seeded random arrays; the test feeds them to the C++ ops.
"""
import argparse
import math

import h5py
import numpy as np


def normal_kl(m1, lv1, m2, lv2):
    return 0.5 * (-1.0 + lv2 - lv1 + np.exp(lv1 - lv2) + (m1 - m2) ** 2 * np.exp(-lv2))


def approx_cdf(x):
    return 0.5 * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def discretized_ll(x, means, log_scales):
    inv = np.exp(-log_scales)
    c = x - means
    cdf_plus = approx_cdf(inv * (c + 1.0 / 255.0))
    cdf_min = approx_cdf(inv * (c - 1.0 / 255.0))
    log_cdf_plus = np.log(np.maximum(cdf_plus, 1e-12))
    log_1m_cdf_min = np.log(np.maximum(1.0 - cdf_min, 1e-12))
    log_delta = np.log(np.maximum(cdf_plus - cdf_min, 1e-12))
    return np.where(x < -0.999, log_cdf_plus, np.where(x > 0.999, log_1m_cdf_min, log_delta))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    rng = np.random.default_rng(1234)
    shape = (4, 3, 5, 5)
    m1, m2 = rng.normal(size=shape), rng.normal(size=shape)
    lv1, lv2 = rng.uniform(-6, 1, size=shape), rng.uniform(-6, 1, size=shape)
    # Pixels on the 256-level grid, edges included, as the decoder sees them.
    x = rng.integers(0, 256, size=shape) / 127.5 - 1.0
    x[0, 0, 0, :] = [-1.0, 1.0, -1.0, 1.0, 0.0]
    # Well-conditioned case: means within ~2 sigma of x, so cdf_plus - cdf_min is not tiny.
    log_scales = rng.uniform(-5, -1, size=shape)
    means = x + np.exp(log_scales) * rng.uniform(-2, 2, size=shape)
    # Tail case: means many sigma away; cdf_plus - cdf_min cancels, which amplifies the last-bit
    # differences of tanh between implementations by ~1/delta (tested with a looser tolerance).
    tail_means = np.clip(x + rng.normal(scale=0.05, size=shape), -1.2, 1.2)
    tail_log_scales = rng.uniform(-6, -1, size=shape)
    z = np.linspace(-4, 4, 101)
    with h5py.File(args.out, "w") as f:
        for name, v in dict(m1=m1, m2=m2, lv1=lv1, lv2=lv2, x=x, means=means, log_scales=log_scales, z=z,
                            kl=normal_kl(m1, lv1, m2, lv2), cdf=approx_cdf(z),
                            ll=discretized_ll(x, means, log_scales), tail_means=tail_means,
                            tail_log_scales=tail_log_scales,
                            ll_tail=discretized_ll(x, tail_means, tail_log_scales),
                            mean_flat_kl=normal_kl(m1, lv1, m2, lv2).mean(axis=(1, 2, 3))).items():
            f[name] = np.asarray(v, dtype=np.float64)


if __name__ == "__main__":
    main()
