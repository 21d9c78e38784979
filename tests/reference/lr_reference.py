#!/usr/bin/env python3
"""Golden learning rates for ddpm::trainer::learning_rate, from the schedule's definition.

Step s is 0-based. Warmup: base * (s + 1) / W for s < W. Then p = clamp((s - W) / (D - W), 0, 1)
(no decay when D <= W): constant base; linear min + (base - min)(1 - p); cosine
min + (base - min)(1 + cos(pi p)) / 2. Plain float64 Python.
"""
import argparse
import math

import h5py
import numpy as np

DECAYS = {"constant": 0, "linear": 1, "cosine": 2}
# (base_lr, warmup W, decay, decay_steps D, min_lr)
CASES = [
    (2e-4, 10, "constant", 100, 0.0),
    (1e-3, 5, "linear", 50, 1e-5),
    (1e-3, 0, "cosine", 40, 1e-4),
    (1e-3, 20, "cosine", 10, 0.0),
    (3e-4, 1, "linear", 2, 0.0),
]
STEPS = 121


def lr(base, W, decay, D, lo, s):
    if s < W:
        return base * (s + 1) / W
    if decay == "constant" or D <= W:
        return base
    p = min(max((s - W) / (D - W), 0.0), 1.0)
    if decay == "linear":
        return lo + (base - lo) * (1.0 - p)
    return lo + (base - lo) * 0.5 * (1.0 + math.cos(math.pi * p))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    with h5py.File(args.out, "w") as f:
        f["cases"] = np.array([[b, W, DECAYS[d], D, lo] for b, W, d, D, lo in CASES], dtype=np.float64)
        for i, case in enumerate(CASES):
            f[f"lr_{i}"] = np.array([lr(*case, s) for s in range(STEPS)], dtype=np.float64)


if __name__ == "__main__":
    main()
