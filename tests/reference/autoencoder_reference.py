#!/usr/bin/env python3
"""Reference KL autoencoder (latent diffusion's AutoencoderKL: Rombach et al. 2022) in plain
PyTorch, written from the architecture description with latent-diffusion's parameter names, to
check ddpm's C++ autoencoder (model/autoencoder) number by number from the same weights file.

Golden mode (--out G.h5): for a few small configurations it builds the model with randomised
weights (GroupNorm affine parameters included), saves them with torch.save next to G.h5
(G_<cfg>.pt), and writes into G.h5 under <cfg>/: the input x, the posterior noise, the float64
posterior mean and log-variance, the decoder's output of the mean, the KL per example and the
loss terms (rec, kl, loss) of both reconstruction types with the given noise, the state_dict keys
and shapes and the parameter count.
"""
import argparse
import os

import h5py
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# name -> (in_channels, channels, channel_mult, num_res_blocks, z_channels, norm_groups, image size)
CONFIGS = {
    "f2": (1, 32, (1, 2), 1, 4, 32, 8),
    "f4": (3, 16, (1, 2, 2), 2, 3, 8, 8),
}
KL_WEIGHT = 0.5  # large, so that the KL term shows in the loss


def norm(ch, groups):
    return nn.GroupNorm(groups, ch, eps=1e-6)


def swish(x):
    return x * torch.sigmoid(x)


class ResnetBlock(nn.Module):
    def __init__(self, cin, cout, groups):
        super().__init__()
        self.norm1 = norm(cin, groups)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = norm(cout, groups)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x):
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(swish(self.norm2(h)))
        return (x if self.nin_shortcut is None else self.nin_shortcut(x)) + h


class AttnBlock(nn.Module):
    """Single-head attention over the positions, written as einsums (not the C++ bmm order)."""

    def __init__(self, ch, groups):
        super().__init__()
        self.norm = norm(ch, groups)
        self.q, self.k, self.v = (nn.Conv2d(ch, ch, 1) for _ in range(3))
        self.proj_out = nn.Conv2d(ch, ch, 1)

    def forward(self, x):
        n, c, h, w = x.shape
        hn = self.norm(x)
        q, k, v = (m(hn).reshape(n, c, h * w) for m in (self.q, self.k, self.v))
        weights = torch.softmax(torch.einsum("nci,ncj->nij", q, k) / c ** 0.5, dim=2)  # (n, query, key)
        out = torch.einsum("ncj,nij->nci", v, weights).reshape(n, c, h, w)
        return x + self.proj_out(out)


class Resample(nn.Module):
    def __init__(self, ch, down):
        super().__init__()
        self.down = down
        self.conv = nn.Conv2d(ch, ch, 3, stride=2 if down else 1, padding=0 if down else 1)

    def forward(self, x):
        if self.down:
            return self.conv(F.pad(x, (0, 1, 0, 1)))
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Mid(nn.Module):
    def __init__(self, ch, groups):
        super().__init__()
        self.block_1 = ResnetBlock(ch, ch, groups)
        self.attn_1 = AttnBlock(ch, groups)
        self.block_2 = ResnetBlock(ch, ch, groups)

    def forward(self, x):
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nn.Module):
    def __init__(self, cin, ch, mult, nres, z, groups):
        super().__init__()
        self.conv_in = nn.Conv2d(cin, ch, 3, padding=1)
        self.down = nn.ModuleList()
        width = ch
        for level, m in enumerate(mult):
            mod = nn.Module()
            mod.block = nn.ModuleList([ResnetBlock(width if b == 0 else ch * m, ch * m, groups) for b in range(nres)])
            width = ch * m
            if level + 1 < len(mult):
                mod.downsample = Resample(width, down=True)
            self.down.append(mod)
        self.mid = Mid(width, groups)
        self.norm_out = norm(width, groups)
        self.conv_out = nn.Conv2d(width, 2 * z, 3, padding=1)

    def forward(self, x):
        h = self.conv_in(x)
        for mod in self.down:
            for b in mod.block:
                h = b(h)
            if hasattr(mod, "downsample"):
                h = mod.downsample(h)
        return self.conv_out(swish(self.norm_out(self.mid(h))))


class Decoder(nn.Module):
    def __init__(self, cout, ch, mult, nres, z, groups):
        super().__init__()
        width = ch * mult[-1]
        self.conv_in = nn.Conv2d(z, width, 3, padding=1)
        self.mid = Mid(width, groups)
        levels = [None] * len(mult)
        for level in reversed(range(len(mult))):
            mod = nn.Module()
            out = ch * mult[level]
            mod.block = nn.ModuleList([ResnetBlock(width if b == 0 else out, out, groups) for b in range(nres + 1)])
            width = out
            if level > 0:
                mod.upsample = Resample(width, down=False)
            levels[level] = mod
        self.up = nn.ModuleList(levels)
        self.norm_out = norm(width, groups)
        self.conv_out = nn.Conv2d(width, cout, 3, padding=1)

    def forward(self, z):
        h = self.mid(self.conv_in(z))
        for mod in reversed(self.up):
            for b in mod.block:
                h = b(h)
            if hasattr(mod, "upsample"):
                h = mod.upsample(h)
        return self.conv_out(swish(self.norm_out(h)))


class AutoencoderKL(nn.Module):
    def __init__(self, cin, ch, mult, nres, z, groups):
        super().__init__()
        self.encoder = Encoder(cin, ch, mult, nres, z, groups)
        self.decoder = Decoder(cin, ch, mult, nres, z, groups)
        self.quant_conv = nn.Conv2d(2 * z, 2 * z, 1)
        self.post_quant_conv = nn.Conv2d(z, z, 1)

    def encode(self, x):
        mean, logvar = torch.chunk(self.quant_conv(self.encoder(x)), 2, dim=1)
        return mean, torch.clamp(logvar, -30.0, 20.0)

    def decode(self, z):
        return self.decoder(self.post_quant_conv(z))


def kl(mean, logvar):
    return 0.5 * torch.sum(mean ** 2 + torch.exp(logvar) - 1.0 - logvar, dim=(1, 2, 3))


def loss_terms(model, x, noise, rec_type):
    mean, logvar = model.encode(x)
    xhat = model.decode(mean + torch.exp(0.5 * logvar) * noise)
    d = (x - xhat).abs() if rec_type == "l1" else (x - xhat) ** 2
    rec = d.flatten(1).mean(1)
    k = kl(mean, logvar)
    return rec, k, rec + KL_WEIGHT * k / x[0].numel()


def golden(out):
    base = os.path.splitext(out)[0]
    with h5py.File(out, "w") as f:
        f["kl_weight"] = np.array([KL_WEIGHT])
        for name, (cin, ch, mult, nres, z, groups, size) in CONFIGS.items():
            torch.manual_seed(7)
            model = AutoencoderKL(cin, ch, mult, nres, z, groups)
            with torch.no_grad():  # every weight random and O(1/sqrt(fan_in)), norms' affine too
                for p in model.parameters():
                    p.copy_(torch.randn_like(p) * (0.5 if p.dim() == 1 else 1.0 / p[0].numel() ** 0.5))
            torch.save(dict(model.state_dict()), f"{base}_{name}.pt")
            fct = 2 ** (len(mult) - 1)
            x = torch.rand(3, cin, size, size) * 2 - 1
            noise = torch.randn(3, z, size // fct, size // fct)
            m64 = model.double()
            with torch.no_grad():
                mean, logvar = m64.encode(x.double())
                f[f"{name}/x"] = x.numpy()
                f[f"{name}/noise"] = noise.numpy()
                f[f"{name}/mean"] = mean.numpy()
                f[f"{name}/logvar"] = logvar.numpy()
                f[f"{name}/decoded_mean"] = m64.decode(mean).numpy()
                f[f"{name}/kl"] = kl(mean, logvar).numpy()
                for rec_type in ("l1", "l2"):
                    rec, k, loss = loss_terms(m64, x.double(), noise.double(), rec_type)
                    f[f"{name}/{rec_type}/rec"] = rec.numpy()
                    f[f"{name}/{rec_type}/kl"] = k.numpy()
                    f[f"{name}/{rec_type}/loss"] = loss.numpy()
            sd = model.state_dict()
            f[f"{name}/keys"] = np.frombuffer("\n".join(sd.keys()).encode(), dtype=np.uint8)
            shapes = np.full((len(sd), 4), -1, dtype=np.int64)
            for i, t in enumerate(sd.values()):
                shapes[i, : t.dim()] = t.shape
            f[f"{name}/shapes"] = shapes
            f[f"{name}/num_params"] = np.array([sum(p.numel() for p in model.parameters())], dtype=np.int64)
    print(f"wrote {out} ({', '.join(CONFIGS)})")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True)
    golden(ap.parse_args().out)


if __name__ == "__main__":
    main()
