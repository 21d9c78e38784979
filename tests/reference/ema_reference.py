#!/usr/bin/env python3
"""Golden values for the EMA update (ddpm::ops::ema_update_ and ddpm::trainer::EmaSet).

From the definition, in float64 numpy: ema_k = r_k * ema_{k-1} + (1 - r_k) * p_k, with ema_0 the
initial parameters, r_k = rate without warmup and r_k = min(rate, (1 + k) / (10 + k)) with
warmup, k = 1, 2, ... the count of optimizer steps completed when the update runs.
"""
import argparse

import h5py
import numpy as np

SHAPES = [(3, 4), (7,), (2, 3, 5)]
RATES = [0.9, 0.999, 0.5]
STEPS = 6


def run(init, params_seq, rate, warmup):
    ema = [a.copy() for a in init]
    for k, params in enumerate(params_seq, start=1):
        r = min(rate, (1.0 + k) / (10.0 + k)) if warmup else rate
        ema = [r * e + (1.0 - r) * p for e, p in zip(ema, params)]
    return ema


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    rng = np.random.default_rng(2024)
    init = [rng.normal(size=s) for s in SHAPES]
    params_seq = [[rng.normal(size=s) for s in SHAPES] for _ in range(STEPS)]
    with h5py.File(args.out, "w") as f:
        f["rates"] = np.array(RATES)
        for i, a in enumerate(init):
            f[f"init_{i}"] = a
        for k, params in enumerate(params_seq, start=1):
            for i, a in enumerate(params):
                f[f"param_{k}_{i}"] = a
        for j, rate in enumerate(RATES):
            for warmup in (0, 1):
                for i, a in enumerate(run(init, params_seq, rate, warmup)):
                    f[f"ema_r{j}_w{warmup}_{i}"] = a


if __name__ == "__main__":
    main()
