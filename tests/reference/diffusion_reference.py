#!/usr/bin/env python3
"""Golden values for ddpm::diffusion, written from the equations (float64 numpy, no torch).

Schedules and their derived arrays, q(x_t | x_0), the posterior q(x_{t-1} | x_t, x_0), p_mean_variance
for every mean x variance type, the training losses for every loss type, one ancestral and one DDIM
step, respacing, the loss-second-moment sampler and bits/dim (Ho et al. 2020; Nichol & Dhariwal
2021; docs/DESIGN.md section 2). Inputs are seeded and rounded to float32 so float32 paths see them exactly.
Writes --out (HDF5) and, next to it, diffusion_betas.txt for the "file:" schedule.
"""
import argparse
import math
import os

import h5py
import numpy as np

from ops_reference import discretized_ll, normal_kl

LN2 = math.log(2.0)
MEANS = ["eps", "x0", "prev", "v"]
VARS = ["fixed-small", "fixed-large", "learned", "learned-range"]
LOSSES = ["mse", "rescaled-mse", "kl", "rescaled-kl"]

# --- schedules -----------------------------------------------------------------------------


def linear_betas(T):
    scale = 1000.0 / T
    return np.linspace(scale * 1e-4, scale * 0.02, T)


def betas_for_alpha_bar(T, alpha_bar, max_beta=0.999):
    return np.array([min(1.0 - alpha_bar((i + 1) / T) / alpha_bar(i / T), max_beta) for i in range(T)])


def cosine_alpha_bar(t, s=0.008):
    return math.cos((t + s) / (1 + s) * math.pi / 2) ** 2


def sigmoid_alpha_bar(t, start=-3.0, end=3.0, tau=1.0):
    sig = lambda z: 1.0 / (1.0 + math.exp(-z))
    v_start, v_end = sig(start / tau), sig(end / tau)
    return (v_end - sig((t * (end - start) + start) / tau)) / (v_end - v_start)


def named_betas(name, T):
    if name == "linear":
        return linear_betas(T)
    return betas_for_alpha_bar(T, cosine_alpha_bar if name == "cosine" else sigmoid_alpha_bar)


def schedule_arrays(betas):
    ac = np.cumprod(1.0 - betas)
    acp = np.append(1.0, ac[:-1])
    pv = betas * (1.0 - acp) / (1.0 - ac)
    return dict(
        betas=betas, alphas_cumprod=ac, alphas_cumprod_prev=acp, alphas_cumprod_next=np.append(ac[1:], 0.0),
        sqrt_alphas_cumprod=np.sqrt(ac), sqrt_one_minus_alphas_cumprod=np.sqrt(1.0 - ac),
        log_one_minus_alphas_cumprod=np.log(1.0 - ac), sqrt_recip_alphas_cumprod=np.sqrt(1.0 / ac),
        sqrt_recipm1_alphas_cumprod=np.sqrt(1.0 / ac - 1.0), posterior_variance=pv,
        posterior_log_variance_clipped=np.log(np.append(pv[1], pv[1:])),
        posterior_mean_coef1=betas * np.sqrt(acp) / (1.0 - ac),
        posterior_mean_coef2=(1.0 - acp) * np.sqrt(1.0 - betas) / (1.0 - ac))


# --- the diffusion -------------------------------------------------------------------------


class Diffusion:
    def __init__(self, betas):
        self.T = len(betas)
        self.a = schedule_arrays(betas)

    def g(self, name, t):  # arr[t] shaped (N, 1, 1, 1)
        return self.a[name][t].reshape(-1, 1, 1, 1)

    def q_mean_variance(self, x0, t):
        return self.g("sqrt_alphas_cumprod", t) * x0, self.g("log_one_minus_alphas_cumprod", t) + 0 * x0

    def q_sample(self, x0, t, noise):
        return self.g("sqrt_alphas_cumprod", t) * x0 + self.g("sqrt_one_minus_alphas_cumprod", t) * noise

    def q_posterior(self, x0, xt, t):
        mean = self.g("posterior_mean_coef1", t) * x0 + self.g("posterior_mean_coef2", t) * xt
        var = self.g("posterior_variance", t) + 0 * xt
        return mean, var, self.g("posterior_log_variance_clipped", t) + 0 * xt

    def xstart_from_eps(self, xt, t, eps):
        return self.g("sqrt_recip_alphas_cumprod", t) * xt - self.g("sqrt_recipm1_alphas_cumprod", t) * eps

    def eps_from_xstart(self, xt, t, x0):
        return (self.g("sqrt_recip_alphas_cumprod", t) * xt - x0) / self.g("sqrt_recipm1_alphas_cumprod", t)

    def p_mean_variance(self, out, x, t, mean_type, var_type, clip):
        C = x.shape[1]
        if var_type in ("learned", "learned-range"):
            out, v = out[:, :C], out[:, C:]
            if var_type == "learned":
                log_var = v
            else:
                frac = (v + 1) / 2
                log_var = frac * np.log(self.g("betas", t)) + (1 - frac) * self.g("posterior_log_variance_clipped", t)
            var = np.exp(log_var)
        elif var_type == "fixed-large":
            large = np.append(self.a["posterior_variance"][1], self.a["betas"][1:])
            var, log_var = large[t].reshape(-1, 1, 1, 1) + 0 * x, np.log(large[t]).reshape(-1, 1, 1, 1) + 0 * x
        else:  # posterior variance, 0 at t = 0, with the clipped log
            var, log_var = self.g("posterior_variance", t) + 0 * x, self.g("posterior_log_variance_clipped", t) + 0 * x
        proc = (lambda z: np.clip(z, -1, 1)) if clip else (lambda z: z)
        if mean_type == "prev":  # invert the posterior mean for x_0
            c1, c2 = self.g("posterior_mean_coef1", t), self.g("posterior_mean_coef2", t)
            return dict(mean=out, variance=var, log_variance=log_var, pred_xstart=proc((out - c2 * x) / c1))
        if mean_type == "x0":
            x0 = proc(out)
        elif mean_type == "eps":
            x0 = proc(self.xstart_from_eps(x, t, out))
        else:  # v = sqrt(abar) eps - sqrt(1 - abar) x_0
            x0 = proc(self.g("sqrt_alphas_cumprod", t) * x - self.g("sqrt_one_minus_alphas_cumprod", t) * out)
        return dict(mean=self.q_posterior(x0, x, t)[0], variance=var, log_variance=log_var, pred_xstart=x0)

    def vb_bpd(self, out, x0, xt, t, mean_type, var_type, clip):
        true_mean, _, true_lv = self.q_posterior(x0, xt, t)
        p = self.p_mean_variance(out, xt, t, mean_type, var_type, clip)
        kl = normal_kl(true_mean, true_lv, p["mean"], p["log_variance"]).mean(axis=(1, 2, 3)) / LN2
        nll = -discretized_ll(x0, p["mean"], 0.5 * p["log_variance"]).mean(axis=(1, 2, 3)) / LN2
        return np.where(t == 0, nll, kl), p

    def training_losses(self, out, x0, t, noise, mean_type, var_type, loss_type):
        xt = self.q_sample(x0, t, noise)
        if loss_type in ("kl", "rescaled-kl"):
            vb = self.vb_bpd(out, x0, xt, t, mean_type, var_type, False)[0]
            return dict(loss=vb * (self.T if loss_type == "rescaled-kl" else 1.0))
        terms = {}
        C = x0.shape[1]
        if var_type in ("learned", "learned-range"):  # (numpy has no gradients: detach is a no-op)
            terms["vb"] = self.vb_bpd(out, x0, xt, t, mean_type, var_type, False)[0]
            if loss_type == "rescaled-mse":
                terms["vb"] = terms["vb"] * (self.T / 1000.0)
            out = out[:, :C]
        target = dict(prev=self.q_posterior(x0, xt, t)[0], x0=x0, eps=noise,
                      v=self.g("sqrt_alphas_cumprod", t) * noise - self.g("sqrt_one_minus_alphas_cumprod", t) * x0)
        terms["mse"] = ((target[mean_type] - out) ** 2).mean(axis=(1, 2, 3))
        terms["loss"] = terms["mse"] + terms.get("vb", 0.0)
        return terms

    def p_sample(self, out, x, t, mean_type, var_type, clip, noise):
        p = self.p_mean_variance(out, x, t, mean_type, var_type, clip)
        mask = (t != 0).astype(np.float64).reshape(-1, 1, 1, 1)
        return p["mean"] + mask * np.exp(0.5 * p["log_variance"]) * noise

    def ddim_sample(self, out, x, t, mean_type, clip, eta, noise):
        x0 = self.p_mean_variance(out, x, t, mean_type, "fixed-small", clip)["pred_xstart"]
        eps = self.eps_from_xstart(x, t, x0)
        ab, abp = self.g("alphas_cumprod", t), self.g("alphas_cumprod_prev", t)
        sigma = eta * np.sqrt((1 - abp) / (1 - ab)) * np.sqrt(1 - ab / abp)
        mask = (t != 0).astype(np.float64).reshape(-1, 1, 1, 1)
        return x0 * np.sqrt(abp) + np.sqrt(1 - abp - sigma ** 2) * eps + mask * sigma * noise

    def ddim_reverse(self, out, x, t, mean_type, clip):
        x0 = self.p_mean_variance(out, x, t, mean_type, "fixed-small", clip)["pred_xstart"]
        eps = self.eps_from_xstart(x, t, x0)
        abn = self.g("alphas_cumprod_next", t)
        return x0 * np.sqrt(abn) + np.sqrt(1 - abn) * eps

    def prior_bpd(self, x0):
        t = np.full(x0.shape[0], self.T - 1)
        mean, log_var = self.q_mean_variance(x0, t)
        return normal_kl(mean, log_var, 0.0, 0.0).mean(axis=(1, 2, 3)) / LN2


def bpd_model(x, t):
    """The deterministic network of the bits/dim test (also in losses_test.cpp): eps, learned range."""
    tf = t.astype(np.float64).reshape(-1, 1, 1, 1)
    return np.concatenate([0.8 * np.tanh(x) + 0.05 * tf, np.sin(x + 0.1 * tf)], axis=1)


def bpd_loop(d, x0, noise, clip):
    N = x0.shape[0]
    vb, xmse, mse = np.zeros((N, d.T)), np.zeros((N, d.T)), np.zeros((N, d.T))
    for i in reversed(range(d.T)):
        t = np.full(N, i)
        xt = d.q_sample(x0, t, noise[i])
        vb[:, i], p = d.vb_bpd(bpd_model(xt, t), x0, xt, t, "eps", "learned-range", clip)
        xmse[:, i] = ((p["pred_xstart"] - x0) ** 2).mean(axis=(1, 2, 3))
        mse[:, i] = ((d.eps_from_xstart(xt, t, p["pred_xstart"]) - noise[i]) ** 2).mean(axis=(1, 2, 3))
    prior = d.prior_bpd(x0)
    return dict(total_bpd=vb.sum(axis=1) + prior, prior_bpd=prior, vb=vb, xstart_mse=xmse, mse=mse)


# --- respacing and the importance sampler --------------------------------------------------


def space_timesteps(T, spec):
    if spec.startswith("ddim"):
        n = int(spec[4:])
        for stride in range(1, T):
            if len(range(0, T, stride)) == n:
                return list(range(0, T, stride))
        raise ValueError(spec)
    counts = [int(c) for c in spec.split(",")]
    size_per, extra = divmod(T, len(counts))
    steps, start = [], 0
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        cur = 0.0
        for _ in range(count):
            steps.append(start + round(cur))  # Python's round: half to even
            cur += stride
        start += size
    return sorted(steps)


def respaced_betas(betas, keep):
    ac = np.cumprod(1.0 - betas)
    prev = np.append(1.0, ac[keep][:-1])
    return 1.0 - ac[keep] / prev


def second_moment_probs(ts, losses, T, history=10, uniform_prob=0.001):
    hist, counts = np.zeros((T, history)), np.zeros(T, dtype=np.int64)
    for t, loss in zip(ts, losses):
        if counts[t] == history:
            hist[t] = np.append(hist[t, 1:], loss)
        else:
            hist[t, counts[t]] = loss
            counts[t] += 1
    if (counts < history).any():
        return np.full(T, 1.0 / T), hist, counts
    w = np.sqrt((hist ** 2).mean(axis=1))
    w = w / w.sum() * (1 - uniform_prob) + uniform_prob / T
    return w / w.sum(), hist, counts


# --- main ----------------------------------------------------------------------------------


def f32(a):
    return np.asarray(a, dtype=np.float32).astype(np.float64)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    rng = np.random.default_rng(2021)
    out = {}

    file_betas = np.linspace(1e-3, 0.2, 30) * (1.0 + 0.1 * rng.uniform(size=30))
    with open(os.path.join(os.path.dirname(os.path.abspath(args.out)), "diffusion_betas.txt"), "w") as f:
        f.write("# 30 betas for the file: schedule test\n" + "".join("%.17g\n" % b for b in file_betas))
    for name, T, betas in [(n, T, named_betas(n, T)) for n in ("linear", "cosine", "sigmoid") for T in (50, 1000)] + \
            [("file", 30, file_betas)]:
        for k, v in schedule_arrays(betas).items():
            out[f"sched.{name}.{T}.{k}"] = v

    # The core case: linear T = 100, a batch of 8 (2 channels, 3x3), t including 0 and T - 1.
    d = Diffusion(linear_betas(100))
    shape = (8, 2, 3, 3)
    t = np.array([0, 1, 5, 17, 42, 73, 98, 99])
    x0 = f32(rng.integers(0, 256, size=shape) / 127.5 - 1.0)
    x0[0, 0, 0, :] = [-1.0, 1.0, 0.0]
    noise, noise2 = f32(rng.normal(size=shape)), f32(rng.normal(size=shape))
    out1 = f32(rng.normal(size=shape))
    out2 = np.concatenate([out1, f32(rng.uniform(-1, 1, size=shape))], axis=1)
    xt = d.q_sample(x0, t, noise)
    out.update(x_start=x0, t=t, noise=noise, noise2=noise2, out1=out1, out2=out2, x_t=xt)
    qm, qv = d.q_mean_variance(x0, t)
    pm, pv, plv = d.q_posterior(x0, xt, t)
    out.update({"q.mean": qm, "q.log_variance": qv, "post.mean": pm, "post.variance": pv,
                "post.log_variance": plv})
    for m in MEANS:
        for v in VARS:
            o = out2 if v.startswith("learned") else out1
            for clip in (0, 1):
                p = d.p_mean_variance(o, xt, t, m, v, clip)
                for k in ("mean", "variance", "log_variance", "pred_xstart"):
                    out[f"pmv.{m}.{v}.{clip}.{k}"] = p[k]
            out[f"ps.{m}.{v}.sample"] = d.p_sample(o, xt, t, m, v, True, noise2)
            for lt in LOSSES:
                for k, val in d.training_losses(o, x0, t, noise, m, v, lt).items():
                    out[f"tl.{m}.{v}.{lt}.{k}"] = val
        for eta in (0.0, 0.5):
            out[f"ddim.{m}.{eta}.sample"] = d.ddim_sample(out1, xt, t, m, True, eta, noise2)
        out[f"ddimrev.{m}.sample"] = d.ddim_reverse(out1, xt, t, m, True)

    base = linear_betas(1000)
    for spec in ("250", "10,15,20", "ddim25"):
        keep = space_timesteps(1000, spec)
        out[f"respace.{spec}.timesteps"] = np.array(keep, dtype=np.int64)
        out[f"respace.{spec}.betas"] = respaced_betas(base, keep)

    T_is = 6
    ts = np.concatenate([rng.permutation(np.repeat(np.arange(T_is), 10)), rng.integers(0, T_is, size=25)])
    losses = rng.uniform(0.1, 2.0, size=ts.size) * (1 + np.arange(ts.size) % T_is)
    probs, hist, counts = second_moment_probs(ts, losses, T_is)
    out.update({"is.ts": ts.astype(np.int64), "is.losses": losses, "is.probs": probs, "is.history": hist,
                "is.counts": counts})

    db = Diffusion(named_betas("cosine", 8))
    bx0 = f32(rng.integers(0, 256, size=(3, 1, 4, 4)) / 127.5 - 1.0)
    bnoise = f32(rng.normal(size=(8, 3, 1, 4, 4)))
    out.update({"bpd.x_start": bx0, "bpd.noise": bnoise})
    for k, v in bpd_loop(db, bx0, bnoise, True).items():
        out[f"bpd.{k}"] = v

    with h5py.File(args.out, "w") as f:
        for name, v in out.items():
            v = np.asarray(v)
            f[name] = v if v.dtype == np.int64 else v.astype(np.float64)


if __name__ == "__main__":
    main()
