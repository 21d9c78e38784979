#!/usr/bin/env python3
"""Reference ADM U-Net (Ho et al. 2020; Nichol & Dhariwal 2021) in plain PyTorch, written from
the architecture description with improved-diffusion's parameter names, to check ddpm's C++ U-Net
number by number from the same weights file.

Golden mode (--out G.h5): for a few small configurations it builds the model with randomised
weights (zero-initialised convolutions included, so they matter), saves them with torch.save next
to G.h5 (G_<cfg>.pt), and writes the inputs, the float64 forward outputs, the state_dict keys and
shapes, and the forward FLOP count measured by torch.utils.flop_counter into G.h5.
For GRAD_CONFIGS it also writes the float64 gradients of a seeded weighting of the output with
respect to the input and every parameter.
The super-resolution U-Net (improved-diffusion's SuperResModel, with ddpm's conditioning-augmentation
embedding as an option) is checked the same way (SR_CONFIGS).
Count mode (--count): prints the parameter count of the published presets.
"""
import argparse
import math
import os

import h5py
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


# ---- building blocks ------------------------------------------------------------------------

class GroupNorm32(nn.GroupNorm):
    """GroupNorm(32) computed in float32 (or float64 when the input is float64)."""

    def forward(self, x):
        up = x if x.dtype == torch.float64 else x.float()
        return super().forward(up).type(x.dtype)


def zero(m):
    for p in m.parameters():
        p.detach().zero_()
    return m


def timestep_embedding(t, dim, max_period=10000):
    """[cos(t f_i), sin(t f_i)] with f_i = max_period^(-i/half), i < half; zero-padded if odd."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float64) / half)
    args = t[:, None].double() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class Downsample(nn.Module):
    def __init__(self, ch, use_conv):
        super().__init__()
        self.use_conv = use_conv
        if use_conv:
            self.op = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x, emb=None):
        return self.op(x) if self.use_conv else F.avg_pool2d(x, 2, 2)


class Upsample(nn.Module):
    def __init__(self, ch, use_conv):
        super().__init__()
        self.use_conv = use_conv
        if use_conv:
            self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x, emb=None):
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class ResBlock(nn.Module):
    def __init__(self, ch, emb_ch, dropout, out_ch, scale_shift, up=False, down=False):
        super().__init__()
        self.scale_shift = scale_shift
        self.in_layers = nn.Sequential(GroupNorm32(32, ch), nn.SiLU(), nn.Conv2d(ch, out_ch, 3, padding=1))
        self.updown = up or down
        if up:
            self.h_upd, self.x_upd = Upsample(ch, False), Upsample(ch, False)
        elif down:
            self.h_upd, self.x_upd = Downsample(ch, False), Downsample(ch, False)
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_ch, 2 * out_ch if scale_shift else out_ch))
        self.out_layers = nn.Sequential(GroupNorm32(32, out_ch), nn.SiLU(), nn.Dropout(dropout),
                                        zero(nn.Conv2d(out_ch, out_ch, 3, padding=1)))
        self.skip_connection = nn.Identity() if out_ch == ch else nn.Conv2d(ch, out_ch, 1)

    def forward(self, x, emb):
        if self.updown:
            h = self.in_layers[:-1](x)
            h = self.in_layers[-1](self.h_upd(h))
            x = self.x_upd(x)
        else:
            h = self.in_layers(x)
        e = self.emb_layers(emb).type(h.dtype)[:, :, None, None]
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + e)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Self-attention over H*W positions; qkv is split per head as [q_h; k_h; v_h] (legacy order)."""

    def __init__(self, ch, heads):
        super().__init__()
        self.heads = heads
        self.norm = GroupNorm32(32, ch)
        self.qkv = nn.Conv1d(ch, 3 * ch, 1)
        self.proj_out = zero(nn.Conv1d(ch, ch, 1))

    def forward(self, x, emb=None):
        b, c, hh, ww = x.shape
        x = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(x)).reshape(b * self.heads, -1, hh * ww)
        d = qkv.shape[1] // 3
        q, k, v = qkv.split(d, dim=1)
        s = 1 / math.sqrt(math.sqrt(d))
        w = torch.softmax(torch.einsum("bct,bcs->bts", q * s, k * s), dim=-1)
        h = torch.einsum("bts,bcs->bct", w, v).reshape(b, -1, hh * ww)
        return (x + self.proj_out(h)).reshape(b, c, hh, ww)


class EmbedSequential(nn.Sequential):
    def forward(self, x, emb):
        for m in self:
            x = m(x, emb) if isinstance(m, (ResBlock, AttentionBlock, Downsample, Upsample)) else m(x)
        return x


# ---- the network ----------------------------------------------------------------------------

class UNet(nn.Module):
    def __init__(self, in_channels=3, model_channels=128, out_channels=3, num_res_blocks=2,
                 attention_resolutions=(16,), dropout=0.0, channel_mult=(1, 2, 2, 2), conv_resample=True,
                 num_classes=None, num_heads=1, num_head_channels=-1, use_scale_shift_norm=False,
                 resblock_updown=False, learn_sigma=False, image_size=32):
        super().__init__()
        out_ch_total = out_channels * (2 if learn_sigma else 1)
        attn_ds = {image_size // r for r in attention_resolutions}
        mc = model_channels
        ted = 4 * mc
        self.model_channels = mc
        self.num_classes = num_classes

        def heads(ch):
            return ch // num_head_channels if num_head_channels > 0 else num_heads

        def res(ch, out, **kw):
            return ResBlock(ch, ted, dropout, out, use_scale_shift_norm, **kw)

        self.time_embed = nn.Sequential(nn.Linear(mc, ted), nn.SiLU(), nn.Linear(ted, ted))
        if num_classes is not None:
            self.label_emb = nn.Embedding(num_classes + 1, ted)  # last row: the null label
        # Level 0's width for the input and output convs (guided-diffusion's input_ch; improved-
        # diffusion's out conv took model_channels, wrong when channel_mult[0] != 1).
        input_ch = channel_mult[0] * mc
        self.input_blocks = nn.ModuleList([EmbedSequential(nn.Conv2d(in_channels, input_ch, 3, padding=1))])
        chans, ch, ds = [input_ch], input_ch, 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [res(ch, mult * mc)]
                ch = mult * mc
                if ds in attn_ds:
                    layers.append(AttentionBlock(ch, heads(ch)))
                self.input_blocks.append(EmbedSequential(*layers))
                chans.append(ch)
            if level != len(channel_mult) - 1:
                down = res(ch, ch, down=True) if resblock_updown else Downsample(ch, conv_resample)
                self.input_blocks.append(EmbedSequential(down))
                chans.append(ch)
                ds *= 2
        self.middle_block = EmbedSequential(res(ch, ch), AttentionBlock(ch, heads(ch)), res(ch, ch))
        self.output_blocks = nn.ModuleList([])
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(num_res_blocks + 1):
                layers = [res(ch + chans.pop(), mult * mc)]
                ch = mult * mc
                if ds in attn_ds:
                    layers.append(AttentionBlock(ch, heads(ch)))
                if level and i == num_res_blocks:
                    layers.append(res(ch, ch, up=True) if resblock_updown else Upsample(ch, conv_resample))
                    ds //= 2
                self.output_blocks.append(EmbedSequential(*layers))
        self.out = nn.Sequential(GroupNorm32(32, ch), nn.SiLU(), zero(nn.Conv2d(input_ch, out_ch_total, 3, padding=1)))

    def embed(self, t, y=None):
        dtype = next(self.parameters()).dtype
        emb = self.time_embed(timestep_embedding(t, self.model_channels).to(dtype))
        if self.num_classes is not None:
            if y is None:
                y = torch.full_like(t, self.num_classes).long()
            emb = emb + self.label_emb(y)
        return emb

    def forward(self, x, t, y=None):
        return self.forward_embedded(x, self.embed(t, y))

    def forward_embedded(self, x, emb):
        hs, h = [], x
        for m in self.input_blocks:
            h = m(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for m in self.output_blocks:
            h = m(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h)


class SuperResModel(UNet):
    """improved-diffusion's SuperResModel: the UNet on [x_t, bilinear upsampling of low_res] (2C input
    channels). With aug_embed=True, ddpm's extension for conditioning augmentation (Ho et al. 2021):
    aug_embed (Linear, SiLU, Linear; last layer zero-initialised) of timestep_embedding(aug_level)
    is added to the time embedding."""

    def __init__(self, in_channels=3, aug_embed=False, **kw):
        super().__init__(in_channels=2 * in_channels, **kw)
        if aug_embed:
            mc = self.model_channels
            self.aug_embed = nn.Sequential(nn.Linear(mc, 4 * mc), nn.SiLU(), zero(nn.Linear(4 * mc, 4 * mc)))
        else:
            self.aug_embed = None

    def forward(self, x, t, low_res, aug_level=None, y=None):
        up = F.interpolate(low_res, x.shape[2:], mode="bilinear", align_corners=False)
        emb = self.embed(t, y)
        if self.aug_embed is not None:
            dtype = next(self.parameters()).dtype
            emb = emb + self.aug_embed(timestep_embedding(aug_level, self.model_channels).to(dtype))
        return self.forward_embedded(torch.cat([x, up], dim=1), emb)


PRESETS = {
    "ddpm-cifar10": dict(model_channels=128, channel_mult=(1, 2, 2, 2), num_res_blocks=2,
                         attention_resolutions=(16,), dropout=0.1, image_size=32),
    "improved-cifar10": dict(model_channels=128, channel_mult=(1, 2, 2, 2), num_res_blocks=3,
                             attention_resolutions=(16, 8), dropout=0.3, num_heads=4,
                             use_scale_shift_norm=True, learn_sigma=True, image_size=32),
    "improved-imagenet64": dict(model_channels=128, channel_mult=(1, 2, 3, 4), num_res_blocks=3,
                                attention_resolutions=(16, 8), num_heads=4, use_scale_shift_norm=True,
                                learn_sigma=True, image_size=64),
}

# Small configurations for the golden comparison (16 px or less).
CONFIGS = {
    "tiny": dict(in_channels=3, model_channels=32, out_channels=3, channel_mult=(1, 2), num_res_blocks=1,
                 attention_resolutions=(8,), num_heads=2, image_size=16),
    "full": dict(in_channels=3, model_channels=32, out_channels=3, channel_mult=(1, 2, 2), num_res_blocks=2,
                 attention_resolutions=(8, 4), num_head_channels=16, use_scale_shift_norm=True,
                 resblock_updown=True, learn_sigma=True, num_classes=5, dropout=0.1, image_size=16),
    "plain": dict(in_channels=1, model_channels=32, out_channels=1, channel_mult=(1, 2), num_res_blocks=1,
                  attention_resolutions=(8,), conv_resample=False, image_size=8),
    # channel_mult[0] != 1: the input and output convs have channel_mult[0] * model_channels channels.
    "mult2": dict(in_channels=3, model_channels=32, out_channels=3, channel_mult=(2, 2), num_res_blocks=1,
                  attention_resolutions=(8,), num_heads=2, image_size=16),
    "mult24": dict(in_channels=1, model_channels=32, out_channels=1, channel_mult=(2, 4), num_res_blocks=1,
                   attention_resolutions=(8, 4), num_head_channels=32, use_scale_shift_norm=True,
                   resblock_updown=True, learn_sigma=True, image_size=8),
}
# Configurations whose backward pass is checked too: the float64 gradients of sum(out * cotangent)
# with respect to x (grad_x) and to every parameter (grad/<state_dict key>).
GRAD_CONFIGS = ("mult2", "mult24")

# Super-resolution configurations: the U-Net options of the high-resolution image plus the
# low-resolution size and whether the augmentation level is an input.
SR_CONFIGS = {
    "superres": dict(in_channels=1, model_channels=32, out_channels=1, channel_mult=(1, 2), num_res_blocks=1,
                     attention_resolutions=(8,), learn_sigma=True, image_size=16, low_res=8, aug_embed=False),
    "superres_aug": dict(in_channels=3, model_channels=32, out_channels=3, channel_mult=(1, 2), num_res_blocks=1,
                         attention_resolutions=(8,), num_heads=2, use_scale_shift_norm=True, image_size=16,
                         low_res=4, aug_embed=True),
    "superres_mult2": dict(in_channels=1, model_channels=32, out_channels=1, channel_mult=(2, 2), num_res_blocks=1,
                           attention_resolutions=(8,), image_size=16, low_res=8, aug_embed=False),
}


def forward_flops(model, x, t, y):
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(x, t, y)
    return fc.get_total_flops() / x.shape[0]


def randomise_and_save(model, path):
    """Every parameter + 0.05 N(0, 1) (the zero-initialised layers too), saved to `path` as a plain
    dict: ddpm's loader does not read the OrderedDict-with-_metadata that torch.save(model.state_dict())
    writes (see the U-Net note)."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    torch.save(dict(model.state_dict()), path)


def write_layout(f, name, model):
    """name/keys (newline-joined), name/shapes (one row per key, padded to 4 dims with -1) and
    name/num_params: what the C++ tests compare the state_dict with."""
    keys = list(model.state_dict().keys())
    f[f"{name}/keys"] = np.frombuffer("\n".join(keys).encode(), dtype=np.uint8)
    shapes = np.full((len(keys), 4), -1, dtype=np.int64)
    for j, v in enumerate(model.state_dict().values()):
        shapes[j, :v.dim()] = list(v.shape)
    f[f"{name}/shapes"] = shapes
    f[f"{name}/num_params"] = np.array([sum(p.numel() for p in model.parameters())], dtype=np.int64)


def golden(out):
    base = os.path.splitext(out)[0]
    with h5py.File(out, "w") as f:
        for i, (name, cfg) in enumerate(CONFIGS.items()):
            torch.manual_seed(100 + i)
            model = UNet(**cfg).eval()
            randomise_and_save(model, f"{base}_{name}.pt")
            n, s = 3, cfg["image_size"]
            x = torch.randn(n, cfg["in_channels"], s, s)
            t = torch.tensor([0, 517, 999], dtype=torch.int64)
            y = None
            if cfg.get("num_classes"):
                y = torch.tensor([1, cfg["num_classes"], 4], dtype=torch.int64)  # middle: null label
                f[f"{name}/y"] = y.numpy()
            flops = forward_flops(model, x, t, y)
            with torch.no_grad():
                out64 = model.double()(x.double(), t, y)
            f[f"{name}/x"] = x.numpy()
            f[f"{name}/t"] = t.numpy()
            f[f"{name}/out"] = out64.numpy()
            f[f"{name}/flops"] = np.array([flops], dtype=np.float64)
            write_layout(f, name, model)
            if name in GRAD_CONFIGS:
                golden_gradients(f, name, model, x.double(), t, y, out64)
        golden_superres(f, base)
        te = timestep_embedding(torch.tensor([0.0, 1.0, 17.5, 999.0]), 33)
        f["timestep_embedding/t"] = np.array([0.0, 1.0, 17.5, 999.0])
        f["timestep_embedding/emb"] = te.numpy()


def golden_gradients(f, name, model, x64, t, y, out64):
    """float64 gradients of sum(out * cotangent) (cotangent N(0, 1), seeded) for x and every parameter."""
    cot = torch.randn(out64.shape, generator=torch.Generator().manual_seed(300), dtype=torch.float64)
    x64 = x64.clone().requires_grad_(True)
    model.zero_grad(set_to_none=True)
    (model(x64, t, y) * cot).sum().backward()
    f[f"{name}/cotangent"] = cot.numpy()
    f[f"{name}/grad_x"] = x64.grad.numpy()
    for k, p in model.named_parameters():
        f[f"{name}/grad/{k}"] = p.grad.numpy()


def golden_superres(f, base):
    """SR_CONFIGS: weights file, inputs x, t, low_res (and aug_level), float64 outputs, keys, shapes."""
    for i, (name, cfg) in enumerate(SR_CONFIGS.items()):
        cfg = dict(cfg)
        low = cfg.pop("low_res")
        torch.manual_seed(200 + i)
        model = SuperResModel(**cfg).eval()
        randomise_and_save(model, f"{base}_{name}.pt")
        n, s, c = 3, cfg["image_size"], cfg["in_channels"]
        x = torch.randn(n, c, s, s)
        t = torch.tensor([0, 517, 999], dtype=torch.int64)
        low_res = torch.rand(n, c, low, low) * 2 - 1
        aug = torch.tensor([0, 3, 250], dtype=torch.int64) if cfg["aug_embed"] else None
        with torch.no_grad():
            out64 = model.double()(x.double(), t, low_res.double(), aug)
        f[f"{name}/x"] = x.numpy()
        f[f"{name}/t"] = t.numpy()
        f[f"{name}/low_res"] = low_res.numpy()
        if aug is not None:
            f[f"{name}/aug_level"] = aug.numpy()
        f[f"{name}/out"] = out64.numpy()
        f[f"{name}/upsampled"] = F.interpolate(low_res.double(), (s, s), mode="bilinear", align_corners=False).numpy()
        write_layout(f, name, model)

def count():
    for name, cfg in PRESETS.items():
        with torch.device("meta"):
            m = UNet(**cfg)
        print(name, sum(p.numel() for p in m.parameters()))


def check_inspect(inspect, golden_path, tmp):
    """Runs `ddpm_inspect unet-forward` on the golden weights and inputs; compares with the
    float64 reference outputs. Exit status 1 on a mismatch."""
    import subprocess
    os.makedirs(tmp, exist_ok=True)
    base = os.path.splitext(golden_path)[0]
    ok = True
    with h5py.File(golden_path, "r") as g:
        for name in ("tiny", "full"):
            cfg = CONFIGS[name]
            inp, out = os.path.join(tmp, f"{name}_in.h5"), os.path.join(tmp, f"{name}_out.h5")
            with h5py.File(inp, "w") as f:
                for k in ("x", "t", "y"):
                    if f"{name}/{k}" in g:
                        f[k] = g[f"{name}/{k}"][()]
            flags = []
            for k, v in cfg.items():
                v = ",".join(map(str, v)) if isinstance(v, tuple) else str(v).lower()
                flags += ["--" + k.replace("_", "-"), v]
            cmd = [inspect, "unet-forward", "--preset", "tiny", *flags, "--weights", f"{base}_{name}.pt",
                   "--input", inp, "--output", out]
            subprocess.run(cmd, check=True)
            with h5py.File(out, "r") as f:
                got = f["out"][()]
            ref = g[f"{name}/out"][()]
            err = np.abs(got - ref).max()
            good = got.dtype == np.float32 and got.shape == ref.shape and err <= 1e-4 + 1e-4 * np.abs(ref).max()
            print(f"[maxdiff] ddpm_inspect unet-forward {name}: abs {err:.3g} (atol 1e-4, rtol 1e-4) "
                  f"{'ok' if good else 'FAILED'}")
            ok = ok and good
    return ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    ap.add_argument("--count", action="store_true")
    ap.add_argument("--check-inspect", help="path of ddpm_inspect to check against --golden")
    ap.add_argument("--golden")
    ap.add_argument("--tmp", default="/tmp/unet_inspect")
    args = ap.parse_args()
    if args.count:
        count()
    if args.out:
        golden(args.out)
    if args.check_inspect and not check_inspect(args.check_inspect, args.golden, args.tmp):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
