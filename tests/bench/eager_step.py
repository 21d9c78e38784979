"""The PyTorch-eager side of the side-by-side benchmark (tests/bench/vs_eager.py): the training step
of ddpm's trainer written as a PyTorch user would write it, on the Python U-Net of
tests/reference/unet_reference.py, from the config, weights and inputs that ddpm_bench_step wrote.

One step: timestep sample (uniform over T: multinomial of the probabilities, weights 1 / (T p_t),
as the trainer's sampler before the importance sampler's history fills) and noise ->
training_losses under torch.autocast (bf16 on CUDA) -> mean weighted loss -> backward through
DistributedDataParallel over a 1-rank process group (gloo on the CPU, NCCL on CUDA) -> global
grad norm (clip_grad_norm_ when grad_clip > 0) -> torch.optim.AdamW(fused=True) at the trainer's
learning rate -> EMA with torch._foreach_lerp_. The losses are written from docs/DESIGN.md section 2
in the same operation order as ddpm's C++ (model/src/diffusion/losses.cpp), so the two steps do
the same arithmetic.
"""
import contextlib
import json
import math
import os
import resource
import sys
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reference"))
from diffusion_reference import named_betas, schedule_arrays  # noqa: E402
from lr_reference import lr as lr_at  # noqa: E402
from unet_reference import UNet  # noqa: E402

LN2 = math.log(2.0)


# ---- Gaussian helpers (ops/src/gaussian.cpp) --------------------------------------------------

def normal_kl(m1, lv1, m2, lv2):
    return 0.5 * (-1.0 + lv2 - lv1 + torch.exp(lv1 - lv2) + (m1 - m2).pow(2) * torch.exp(-lv2))


def approx_cdf(x):
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def discretized_ll(x, means, log_scales):
    centered = x - means
    inv_stdv = torch.exp(-log_scales)
    cdf_plus = approx_cdf(inv_stdv * (centered + 1.0 / 255.0))
    cdf_min = approx_cdf(inv_stdv * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp_min(1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp_min(1e-12))
    mid = torch.log((cdf_plus - cdf_min).clamp_min(1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, mid))


def mean_flat(x):
    return x.mean(dim=list(range(1, x.dim())))


# ---- the diffusion's training losses ----------------------------------------------------------

class Diffusion:
    """GaussianDiffusion.training_losses for the MSE loss types (eps/x0/v means, fixed or learned
    variances, the hybrid L_simple + lambda L_vlb with the mean detached in the vb term)."""

    def __init__(self, cfg, device):
        self.T = cfg["diffusion_steps"]
        self.mean_type, self.var_type, self.loss_type = cfg["mean_type"], cfg["var_type"], cfg["loss_type"]
        self.rescale = cfg["rescale_timesteps"]
        if self.loss_type not in ("mse", "rescaled-mse") or self.mean_type not in ("eps", "x0", "v"):
            raise SystemExit(f"eager_step: loss_type {self.loss_type} / mean_type {self.mean_type} not written here")
        betas = named_betas(cfg["schedule"], self.T)
        a = schedule_arrays(betas)
        pv = a["posterior_variance"]
        large = torch.cat([torch.tensor(pv[1:2]), torch.tensor(betas[1:])]).numpy()
        a.update(log_betas=torch.tensor(betas).log().numpy(), fixed_large_variance=large,
                 fixed_large_log_variance=torch.tensor(large).log().numpy())
        self.a = {k: torch.tensor(v, dtype=torch.float64, device=device) for k, v in a.items()}

    def g(self, name, t, like):  # arr[t] in like's dtype, (N, 1, 1, 1)
        return self.a[name].index_select(0, t).to(like.dtype).view(-1, *([1] * (like.dim() - 1)))

    def q_posterior_mean(self, x0, xt, t):
        return self.g("posterior_mean_coef1", t, xt) * x0 + self.g("posterior_mean_coef2", t, xt) * xt

    def p_mean_logvar(self, out, xt, t):
        C = xt.shape[1]
        if self.var_type in ("learned", "learned-range"):
            out, v = out[:, :C], out[:, C:]
            if self.var_type == "learned":
                log_var = v
            else:
                frac = (v + 1.0) / 2.0
                log_var = frac * self.g("log_betas", t, xt) + (1.0 - frac) * self.g("posterior_log_variance_clipped", t, xt)
        else:
            name = "fixed_large_log_variance" if self.var_type == "fixed-large" else "posterior_log_variance_clipped"
            log_var = self.g(name, t, xt).expand(xt.shape)
        if self.mean_type == "eps":
            x0 = self.g("sqrt_recip_alphas_cumprod", t, xt) * xt - self.g("sqrt_recipm1_alphas_cumprod", t, xt) * out
        elif self.mean_type == "x0":
            x0 = out
        else:
            x0 = self.g("sqrt_alphas_cumprod", t, xt) * xt - self.g("sqrt_one_minus_alphas_cumprod", t, xt) * out
        return self.q_posterior_mean(x0, xt, t), log_var

    def vb_bpd(self, out, x0, xt, t):
        true_mean = self.q_posterior_mean(x0, xt, t)
        true_lv = self.g("posterior_log_variance_clipped", t, xt).expand(xt.shape)
        mean, log_var = self.p_mean_logvar(out, xt, t)
        kl = mean_flat(normal_kl(true_mean, true_lv, mean, log_var)) / LN2
        nll = -mean_flat(discretized_ll(x0, mean, 0.5 * log_var)) / LN2
        return torch.where(t == 0, nll, kl)

    def model_t(self, t):
        return t.float() * (1000.0 / self.T) if self.rescale else t

    def training_losses(self, model, x0, t, noise):
        xt = self.g("sqrt_alphas_cumprod", t, x0) * x0 + self.g("sqrt_one_minus_alphas_cumprod", t, x0) * noise
        out = model(xt, self.model_t(t))
        C = xt.shape[1]
        terms = {}
        if self.var_type in ("learned", "learned-range"):
            frozen = torch.cat([out[:, :C].detach(), out[:, C:]], dim=1)
            terms["vb"] = self.vb_bpd(frozen, x0, xt, t)
            if self.loss_type == "rescaled-mse":
                terms["vb"] = terms["vb"] * (self.T / 1000.0)
            out = out[:, :C]
        if self.mean_type == "eps":
            target = noise
        elif self.mean_type == "x0":
            target = x0
        else:
            target = self.g("sqrt_alphas_cumprod", t, x0) * noise - self.g("sqrt_one_minus_alphas_cumprod", t, x0) * x0
        terms["mse"] = mean_flat((target - out).pow(2))
        terms["loss"] = terms["mse"] + terms["vb"] if "vb" in terms else terms["mse"]
        return terms


# ---- the step ---------------------------------------------------------------------------------

def unet_kwargs(u):
    kw = dict(u)
    kw["attention_resolutions"] = tuple(kw["attention_resolutions"])
    kw["channel_mult"] = tuple(kw["channel_mult"])
    return kw


def init_process_group(device):
    """A 1-rank process group (the all-reduce of the step), in this process's memory."""
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", store=dist.HashStore(),
                                rank=0, world_size=1)


class EagerStep:
    def __init__(self, folder, device, ddp=True):
        with open(os.path.join(folder, "config.json")) as f:
            meta = json.load(f)
        self.cfg, self.device = meta["train"], device
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # as the trainer: fixed shapes, let cuDNN pick
        self.net = UNet(**unet_kwargs(meta["unet"]))
        self.net.load_state_dict(torch.load(os.path.join(folder, "weights.pt")), strict=True)
        self.net.to(device)
        inputs = torch.load(os.path.join(folder, "inputs.pt"))
        self.x = inputs["x"].to(device)
        self.check_t, self.check_noise = inputs["t"].to(device), inputs["noise"].to(device)
        self.diffusion = Diffusion(self.cfg, device)
        self.params = [p for p in self.net.parameters() if p.requires_grad]
        if ddp:
            init_process_group(device)
        self.model = DistributedDataParallel(self.net) if ddp else self.net
        c = self.cfg
        self.opt = torch.optim.AdamW(self.params, lr=c["lr"], betas=(c["adam_beta1"], c["adam_beta2"]),
                                     eps=c["adam_eps"], weight_decay=c["weight_decay"], fused=True)
        self.ema = [[p.detach().clone() for p in self.params] for _ in c["ema_rates"]]
        self.bf16 = c["precision"] == "bf16"
        self.steps = 0
        self.probs = torch.ones(self.diffusion.T, dtype=torch.float64) / self.diffusion.T  # uniform sampler
        self.grad_norm = float("nan")

    def autocast(self):
        if self.bf16 and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def loss(self, t, noise, weights):
        with self.autocast():
            terms = self.diffusion.training_losses(self.model, self.x, t, noise)
        return (terms["loss"].float() * weights).mean()

    def lr(self):
        c = self.cfg
        return lr_at(c["lr"], c["warmup_steps"], c["lr_decay"], c["lr_decay_steps"] or c["max_steps"],
                     c["lr_min"], self.steps)

    def step(self, t, noise, weights):
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss(t, noise, weights)
        loss.backward()  # DDP's hooks all-reduce the gradient buckets
        if self.cfg["grad_clip"] > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg["grad_clip"], foreach=True)
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in self.params], foreach=True)
        for group in self.opt.param_groups:
            group["lr"] = self.lr()
        self.opt.step()
        self.steps += 1
        with torch.no_grad():
            for ema, rate in zip(self.ema, self.cfg["ema_rates"]):
                if self.cfg["ema_warmup"]:
                    rate = min(rate, (1.0 + self.steps) / (10.0 + self.steps))
                torch._foreach_lerp_(ema, self.params, 1.0 - rate)
        return loss, norm

    def sample_t(self, n):
        t = torch.multinomial(self.probs, n, replacement=True)
        w = 1.0 / (self.diffusion.T * self.probs.index_select(0, t))
        return t.to(self.device), w.float().to(self.device)

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def check(self):
        """Eval mode (no dropout), the check inputs: loss1, one full step, loss2 after it."""
        self.net.eval()
        ones = torch.ones(self.x.shape[0], device=self.device)
        lr = self.lr()
        loss1, norm = self.step(self.check_t, self.check_noise, ones)
        with torch.no_grad():
            loss2 = self.loss(self.check_t, self.check_noise, ones)
        self.net.train()
        return dict(loss1=loss1.item(), loss2=loss2.item(), grad_norm=float(norm), lr=lr)

    def steps_(self, n):
        for _ in range(n):
            t, w = self.sample_t(self.x.shape[0])
            self.step(t, torch.randn_like(self.x), w)

    def time(self, n):
        """Seconds for n steps, the CPU seconds of the process (all threads) and its page faults."""
        self.net.train()
        self.sync()
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        cpu0, t0 = time.process_time(), time.perf_counter()
        self.steps_(n)
        self.sync()
        return (time.perf_counter() - t0, time.process_time() - cpu0,
                resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults)

    def profile(self, n, path):
        """n steps under torch.profiler (CPU ops, CUDA kernels on a GPU), saved as a Chrome trace."""
        self.net.train()
        self.sync()
        acts = [torch.profiler.ProfilerActivity.CPU]
        if self.device.type == "cuda":
            acts.append(torch.profiler.ProfilerActivity.CUDA)
        with torch.profiler.profile(activities=acts) as prof:
            self.steps_(n)
            self.sync()
        prof.export_chrome_trace(path)

    def train_flop_per_image(self):
        """FLOP of one forward + backward (torch.utils.flop_counter), per image."""
        from torch.utils.flop_counter import FlopCounterMode
        t, w = self.sample_t(self.x.shape[0])
        noise = torch.randn_like(self.x)
        ctx = self.model.no_sync() if isinstance(self.model, DistributedDataParallel) else contextlib.nullcontext()
        with ctx, FlopCounterMode(display=False) as fc:
            self.loss(t, noise, w).backward()
        self.opt.zero_grad(set_to_none=True)
        return fc.get_total_flops() / self.x.shape[0]
