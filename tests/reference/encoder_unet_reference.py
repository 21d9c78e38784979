#!/usr/bin/env python3
"""Reference noise-conditional classifier (Dhariwal & Nichol 2021): the ADM U-Net's encoder half
with a pooled head, in plain PyTorch, written from the architecture description with
guided-diffusion's EncoderUNetModel parameter names; the blocks are unet_reference.py's.

Golden mode (--out G.h5): for a few small configurations it builds the model with randomised
weights (the zero-initialised convolutions too), saves them with torch.save next to G.h5
(G_<cfg>.pt) and writes the inputs, the float64 logits, the state_dict keys and shapes and the
parameter count into G.h5.
"""
import argparse
import math
import os
import sys

import h5py
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from unet_reference import (AttentionBlock, Downsample, EmbedSequential, GroupNorm32, ResBlock,  # noqa: E402
                            randomise_and_save, timestep_embedding, write_layout, zero)


class AttentionPool2d(nn.Module):
    """CLIP's attention pooling: the mean over positions, prepended to the S*S positions, attends
    over all of them. positional_embedding (C, S*S + 1); qkv_proj and c_proj are 1x1 Conv1d; the
    qkv output is split into q, k, v first and each of them into heads of `head_ch` channels."""

    def __init__(self, spatial, ch, head_ch, out_ch):
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(ch, spatial * spatial + 1) / math.sqrt(ch))
        self.qkv_proj = nn.Conv1d(ch, 3 * ch, 1)
        self.c_proj = nn.Conv1d(ch, out_ch, 1)
        self.heads = ch // head_ch

    def forward(self, x):
        b, c = x.shape[:2]
        x = x.reshape(b, c, -1)
        x = torch.cat([x.mean(dim=-1, keepdim=True), x], dim=-1) + self.positional_embedding[None].to(x.dtype)
        q, k, v = self.qkv_proj(x).chunk(3, dim=1)  # (B, C, L) each
        n, d, length = b * self.heads, c // self.heads, x.shape[-1]
        s = 1 / math.sqrt(math.sqrt(d))
        w = torch.einsum("bct,bcs->bts", (q * s).reshape(n, d, length), (k * s).reshape(n, d, length))
        w = torch.softmax(w, dim=-1)
        a = torch.einsum("bts,bcs->bct", w, v.reshape(n, d, length)).reshape(b, c, length)
        return self.c_proj(a)[:, :, 0]


class EncoderUNet(nn.Module):
    def __init__(self, in_channels=3, model_channels=128, out_channels=10, num_res_blocks=2,
                 attention_resolutions=(16,), dropout=0.0, channel_mult=(1, 2, 2, 2), conv_resample=True,
                 num_heads=1, num_head_channels=-1, use_scale_shift_norm=False, resblock_updown=False,
                 image_size=32, pool="attention"):
        super().__init__()
        attn_ds = {image_size // r for r in attention_resolutions}
        mc = model_channels
        ted = 4 * mc
        self.model_channels = mc

        def heads(ch):
            return ch // num_head_channels if num_head_channels > 0 else num_heads

        def res(ch, out, **kw):
            return ResBlock(ch, ted, dropout, out, use_scale_shift_norm, **kw)

        self.time_embed = nn.Sequential(nn.Linear(mc, ted), nn.SiLU(), nn.Linear(ted, ted))
        ch, ds = channel_mult[0] * mc, 1
        self.input_blocks = nn.ModuleList([EmbedSequential(nn.Conv2d(in_channels, ch, 3, padding=1))])
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [res(ch, mult * mc)]
                ch = mult * mc
                if ds in attn_ds:
                    layers.append(AttentionBlock(ch, heads(ch)))
                self.input_blocks.append(EmbedSequential(*layers))
            if level != len(channel_mult) - 1:
                down = res(ch, ch, down=True) if resblock_updown else Downsample(ch, conv_resample)
                self.input_blocks.append(EmbedSequential(down))
                ds *= 2
        self.middle_block = EmbedSequential(res(ch, ch), AttentionBlock(ch, heads(ch)), res(ch, ch))
        if pool == "attention":
            head_ch = num_head_channels if num_head_channels > 0 else ch // num_heads
            self.out = nn.Sequential(GroupNorm32(32, ch), nn.SiLU(),
                                     AttentionPool2d(image_size // ds, ch, head_ch, out_channels))
        else:  # adaptive
            self.out = nn.Sequential(GroupNorm32(32, ch), nn.SiLU(), nn.AdaptiveAvgPool2d(1),
                                     zero(nn.Conv2d(ch, out_channels, 1)), nn.Flatten())

    def forward(self, x, t):
        dtype = next(self.parameters()).dtype
        emb = self.time_embed(timestep_embedding(t, self.model_channels).to(dtype))
        h = x
        for m in self.input_blocks:
            h = m(h, emb)
        return self.out(self.middle_block(h, emb))


# Small configurations (16 px or less). "attention" is guided-diffusion's classifier recipe in
# miniature (scale-shift norm, residual downsampling, heads by width, attention pooling).
CONFIGS = {
    "attention": dict(in_channels=3, model_channels=32, out_channels=5, channel_mult=(1, 2, 2), num_res_blocks=2,
                      attention_resolutions=(8, 4), num_head_channels=16, use_scale_shift_norm=True,
                      resblock_updown=True, dropout=0.1, image_size=16, pool="attention"),
    "heads": dict(in_channels=1, model_channels=32, out_channels=4, channel_mult=(1, 2), num_res_blocks=1,
                  attention_resolutions=(4,), num_heads=2, image_size=8, pool="attention"),
    "adaptive": dict(in_channels=1, model_channels=32, out_channels=3, channel_mult=(1, 2), num_res_blocks=1,
                     attention_resolutions=(8,), conv_resample=False, image_size=8, pool="adaptive"),
}


def golden(out):
    base = os.path.splitext(out)[0]
    with h5py.File(out, "w") as f:
        for i, (name, cfg) in enumerate(CONFIGS.items()):
            torch.manual_seed(200 + i)
            model = EncoderUNet(**cfg).eval()
            randomise_and_save(model, f"{base}_{name}.pt")
            n, s = 3, cfg["image_size"]
            x = torch.randn(n, cfg["in_channels"], s, s)
            t = torch.tensor([0, 517, 999], dtype=torch.int64)
            with torch.no_grad():
                logits = model.double()(x.double(), t)
            f[f"{name}/x"] = x.numpy()
            f[f"{name}/t"] = t.numpy()
            f[f"{name}/logits"] = logits.numpy()
            write_layout(f, name, model)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    golden(ap.parse_args().out)


if __name__ == "__main__":
    main()
