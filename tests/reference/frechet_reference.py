#!/usr/bin/env python3
"""Golden values for the Frechet distance and FID statistics (float64 numpy/scipy).

d^2 = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrtm(S1 S2)) with scipy.linalg.sqrtm of the product, the
formula of Heusel et al. 2017; cross-checked against sum(sqrt(eig(S1 S2))). Cases include
rank-deficient covariances. Also features with np.mean / np.cov(rowvar=False) for FeatureStats.
"""
import argparse

import h5py
import numpy as np
import scipy.linalg


def frechet_scipy(mu1, s1, mu2, s2):
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = np.real(covmean[0] if isinstance(covmean, tuple) else covmean)
    diff = mu1 - mu2
    return diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean)


def frechet_eig(mu1, s1, mu2, s2):
    w = np.linalg.eigvals(s1 @ s2)
    diff = mu1 - mu2
    return diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.sqrt(np.clip(np.real(w), 0, None)).sum()


def psd(rng, d, rank, scale=1.0):
    a = rng.normal(scale=scale, size=(d, rank))
    return a @ a.T


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    rng = np.random.default_rng(2017)
    cases = {
        "full8": (8, psd(rng, 8, 16), psd(rng, 8, 12, 0.5)),
        "full64": (64, psd(rng, 64, 200), psd(rng, 64, 150, 1.3)),
        "rank_deficient16": (16, psd(rng, 16, 5), psd(rng, 16, 7)),
        "one_singular32": (32, psd(rng, 32, 64), psd(rng, 32, 10)),
        "diag": (6, np.diag(rng.uniform(0.1, 3, 6)), np.diag(rng.uniform(0.1, 3, 6))),
    }
    with h5py.File(args.out, "w") as f:
        for name, (d, s1, s2) in cases.items():
            mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
            ref = frechet_scipy(mu1, s1, mu2, s2)
            alt = frechet_eig(mu1, s1, mu2, s2)
            print(f"{name}: scipy {ref:.12g} eig {alt:.12g} rel {abs(ref - alt) / abs(ref):.2e}")
            assert abs(ref - alt) <= 1e-8 * abs(ref), name
            g = f.create_group(name)
            for k, v in dict(mu1=mu1, s1=s1, mu2=mu2, s2=s2, d=np.array([ref])).items():
                g[k] = np.asarray(v, dtype=np.float64)
        # Features for the streaming statistics and the FID of two feature sets.
        x = rng.normal(size=(37, 10)) * rng.uniform(0.5, 2, 10) + 100.0  # large mean: cancellation test
        y = rng.normal(size=(29, 10)) + 99.5
        f["x"], f["y"] = x, y
        f["x_mean"], f["x_cov"] = x.mean(0), np.cov(x, rowvar=False)
        f["y_mean"], f["y_cov"] = y.mean(0), np.cov(y, rowvar=False)
        f["fid_xy"] = np.array([frechet_scipy(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))])


if __name__ == "__main__":
    main()
