#!/usr/bin/env python3
"""The tiny FID extractor of the FID-during-training tests, and their float64 FID reference.

--out GOLDEN.h5 --module EXTRACTOR.pt: a TorchScript module f(x) = tanh(flatten(x) W + b)
(x (N, C, H, W) in [0, 1], W (C*H*W, D) and b (D) seeded), saved with torch.jit.save; W and b
also go to GOLDEN.h5.
--fid --samples S.npz --data D.h5 --golden GOLDEN.h5 --json OUT.json: the FID of the uint8 samples
(arr_0 (N, H, W, C)) against the images of D.h5, in float64 numpy from the equations:
features of x = u8 / 255, mu and the unbiased covariance (np.cov), and
d^2 = ||mu1 - mu2||^2 + Tr(S1) + Tr(S2) - 2 Tr(sqrtm(S1 S2)) (scipy.linalg.sqrtm).
"""
import argparse
import json

import h5py
import numpy as np
import scipy.linalg

PIXELS, DIM = 64, 8  # 8x8 grey images -> 8 features


def make_extractor(out, module_path):
    import torch

    rng = np.random.default_rng(2020)
    w = rng.normal(scale=1.0 / np.sqrt(PIXELS), size=(PIXELS, DIM)).astype(np.float32) * 4.0
    b = rng.normal(scale=0.5, size=(DIM,)).astype(np.float32)

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("w", torch.from_numpy(w))
            self.register_buffer("b", torch.from_numpy(b))

        def forward(self, x):
            return torch.tanh(x.flatten(1) @ self.w + self.b)

    torch.jit.save(torch.jit.script(Tiny()), module_path)
    with h5py.File(out, "w") as f:
        f["w"] = w
        f["b"] = b


def features(u8_nhwc, w, b):
    x = u8_nhwc.astype(np.float64) / 255.0  # (N, H, W, C)
    x = np.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)  # (N, C*H*W), NCHW order
    return np.tanh(x @ w.astype(np.float64) + b.astype(np.float64))


def frechet(mu1, s1, mu2, s2):
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = np.real(covmean[0] if isinstance(covmean, tuple) else covmean)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


def fid(samples, data, golden, out):
    with h5py.File(golden, "r") as g:
        w, b = g["w"][()], g["b"][()]
    with h5py.File(data, "r") as d:
        ref = d["images"][()]
    gen = np.load(samples)["arr_0"]
    f1, f2 = features(gen, w, b), features(ref, w, b)
    value = frechet(f1.mean(0), np.cov(f1, rowvar=False), f2.mean(0), np.cov(f2, rowvar=False))
    with open(out, "w") as f:
        json.dump({"fid": value, "samples": int(gen.shape[0]), "reference": int(ref.shape[0])}, f)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    ap.add_argument("--module")
    ap.add_argument("--fid", action="store_true")
    ap.add_argument("--samples")
    ap.add_argument("--data")
    ap.add_argument("--golden")
    ap.add_argument("--json")
    a = ap.parse_args()
    if a.fid:
        fid(a.samples, a.data, a.golden, a.json)
    else:
        make_extractor(a.out, a.module)


if __name__ == "__main__":
    main()
