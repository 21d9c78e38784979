#!/usr/bin/env python3
"""Golden InceptionV3 FID features from pytorch-fid's own InceptionV3([3]) with RANDOM weights.

pytorch-fid builds torchvision's Inception3 patched with FIDInceptionA/C/E_1/E_2 and loads
the weights file from a URL; here the loader is replaced by a function returning a randomly
initialised state_dict of that same patched network (no download), which is saved with
torch.save next to --out as <stem>_weights.pth, the format of pt_inception-...pth. Batch-norm
statistics are randomised too so every parameter matters. Also writes a tiny TorchScript
extractor (<stem>_extractor.pt) and its features on the same images.
"""
import argparse
import os

import h5py
import numpy as np
import torch
import pytorch_fid.inception as pfi


def random_fid_state_dict(seed):
    torch.manual_seed(seed)
    net = pfi._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    net.Mixed_5b = pfi.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = pfi.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = pfi.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = pfi.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = pfi.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = pfi.FIDInceptionE_1(1280)
    net.Mixed_7c = pfi.FIDInceptionE_2(2048)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return net.state_dict()


class TinyExtractor(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 6, 3, stride=2)

    def forward(self, x):
        return torch.relu(self.conv(x)).mean(dim=(2, 3))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    stem = os.path.splitext(args.out)[0]
    torch.set_num_threads(2)
    state = random_fid_state_dict(1512)
    torch.save(state, stem + "_weights.pth")  # an OrderedDict, as pytorch-fid's file holds
    pfi.load_state_dict_from_url = lambda *a, **k: state  # no download: pytorch-fid loads ours
    model = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()

    g = torch.Generator().manual_seed(7)
    images = torch.rand(3, 3, 40, 52, generator=g)  # (N, C, H, W) in [0, 1], not square
    with torch.no_grad():
        feats = model(images)[0].squeeze(3).squeeze(2)  # (N, 2048)
        feats64 = model.double()(images.double())[0].squeeze(3).squeeze(2)
    print("features: mean %.4g std %.4g; float32 vs float64 max abs diff %.3g"
          % (feats.mean(), feats.std(), (feats.double() - feats64).abs().max()))

    torch.manual_seed(3)
    tiny = torch.jit.script(TinyExtractor().eval())
    tiny.save(stem + "_extractor.pt")
    with torch.no_grad():
        tiny_feats = tiny(images)
    with h5py.File(args.out, "w") as f:
        f["images"] = images.numpy()
        f["features"] = feats.numpy()
        f["features64"] = feats64.numpy()
        f["tiny_features"] = tiny_feats.numpy()


if __name__ == "__main__":
    main()
