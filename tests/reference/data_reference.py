#!/usr/bin/env python3
"""Reference data for the ddpm::data tests: the epoch permutation and flip decisions written from
their definition in data/include/ddpm/data/reader.h (python integers, no shortcuts), NumPy .npy/.npz
inputs written by numpy itself, PNG/JPEG folders written by Pillow, and the expected arrays
(Pillow's decoding; improved-diffusion's resize recipe: BOX halving, BICUBIC, centre crop)."""
import argparse
import os

import h5py
import numpy as np
from PIL import Image

M = (1 << 64) - 1
GAMMA = 0x9E3779B97F4A7C15


def mix(x):
    z = (x + GAMMA) & M
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
    return z ^ (z >> 31)


def permutation(n, seed, epoch):
    p = list(range(n))
    state = mix((seed * 1000003 + epoch) & M)
    for i in range(n - 1, 0, -1):
        bound = i + 1
        threshold = ((1 << 64) - bound) % bound
        while True:
            x = mix(state)
            state = (state + GAMMA) & M
            if x >= threshold:
                break
        j = x % bound
        p[i], p[j] = p[j], p[i]
    return p


def flip(seed, epoch, index):
    return mix(mix((seed * 1000003 + epoch) & M) ^ index) >> 63


def center_crop_arr(img, r):
    while min(*img.size) >= 2 * r:
        img = img.resize(tuple(x // 2 for x in img.size), resample=Image.BOX)
    scale = r / min(*img.size)
    img = img.resize(tuple(round(x * scale) for x in img.size), resample=Image.BICUBIC)
    a = np.array(img)
    y, x = (a.shape[0] - r) // 2, (a.shape[1] - r) // 2
    return a[y:y + r, x:x + r]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    root = os.path.join(os.path.dirname(args.out), "data_inputs")
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(4)
    g = {}
    for name, (n, seed, epoch) in {"perm_a": (1000, 0, 0), "perm_b": (1000, 12345, 7),
                                   "perm_c": (37, (1 << 63) + 5, 3)}.items():
        g[name] = np.array(permutation(n, seed, epoch), dtype=np.int64)
    g["flips_b"] = np.array([flip(12345, 7, i) for i in range(1000)], dtype=np.int64)

    # NumPy inputs.
    images = rng.integers(0, 256, size=(7, 6, 5, 3), dtype=np.uint8)
    labels = rng.integers(0, 4, size=7).astype(np.int64)
    labels[0] = 3
    g["npy_images"], g["npy_labels"] = images, labels
    np.save(f"{root}/images.npy", images)
    np.save(f"{root}/labels.npy", labels)
    np.save(f"{root}/labels_u8.npy", labels.astype(np.uint8))
    np.save(f"{root}/images_nchw.npy", np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    np.save(f"{root}/gray.npy", images[..., 0].copy())
    np.savez(f"{root}/samples.npz", images, labels)  # arr_0, arr_1 as improved-diffusion writes
    np.savez_compressed(f"{root}/samples_compressed.npz", images=images, labels=labels.astype(np.int32))
    np.save(f"{root}/float.npy", images.astype(np.float32) / 255)
    np.save(f"{root}/rank2.npy", images.reshape(7, -1))
    np.save(f"{root}/fortran.npy", np.asfortranarray(images))
    np.save(f"{root}/labels_short.npy", labels[:6])
    with open(f"{root}/truncated.npy", "wb") as f:
        f.write(open(f"{root}/images.npy", "rb").read()[:-10])

    # A folder with class sub-folders, mixed sizes and formats; resized to 16.
    classes = os.path.join(root, "folder_classes")
    entries = []
    for cls, k in (("cat", 3), ("dog", 2)):
        os.makedirs(os.path.join(classes, cls), exist_ok=True)
        for i in range(k):
            h, w = [(40, 52), (33, 33), (70, 45)][i % 3]
            a = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            a = np.clip(a.astype(np.float64), 0, 255)  # smooth a little so the resize is meaningful
            a = ((a + np.roll(a, 1, 0) + np.roll(a, 1, 1) + np.roll(a, 1, (0, 1))) / 4).astype(np.uint8)
            path = os.path.join(classes, cls, f"{i}.png")
            Image.fromarray(a).save(path)
            entries.append((os.path.relpath(path, classes), path, cls))
    gpath = os.path.join(classes, "dog", "9_gray.jpg")  # grayscale JPEG, expanded to RGB
    Image.fromarray(rng.integers(0, 256, size=(20, 24), dtype=np.uint8)).save(gpath, quality=95)
    entries.append((os.path.relpath(gpath, classes), gpath, "dog"))
    entries.sort()
    names = sorted({e[2] for e in entries})
    g["folder_resized"] = np.stack([center_crop_arr(Image.open(p).convert("RGB"), 16) for _, p, _ in entries])
    g["folder_labels"] = np.array([names.index(c) for _, _, c in entries], dtype=np.int64)

    # A flat folder with labels from the file-name prefix; uniform 8x8 size, PNG and JPEG.
    prefix = os.path.join(root, "folder_prefix")
    os.makedirs(prefix, exist_ok=True)
    flat = []
    for i, name in enumerate(["b_0.png", "a_1.png", "b_2.jpg", "c_3.png"]):
        a = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        Image.fromarray(a).save(os.path.join(prefix, name), quality=95)
        flat.append(name)
    flat.sort()
    g["prefix_images"] = np.stack([np.array(Image.open(os.path.join(prefix, n)).convert("RGB")) for n in flat])
    g["prefix_labels"] = np.array([sorted({n.split("_")[0] for n in flat}).index(n.split("_")[0]) for n in flat],
                                  dtype=np.int64)
    os.makedirs(os.path.join(root, "folder_empty", "sub"), exist_ok=True)
    bad = os.path.join(root, "folder_bad")
    os.makedirs(bad, exist_ok=True)
    Image.fromarray(images[0]).save(os.path.join(bad, "a.png"))
    with open(os.path.join(bad, "notes.txt"), "w") as f:
        f.write("not an image\n")

    # Dataset files written by h5py: variable-length (str) and fixed-length (bytes) string
    # attributes, int32 attributes; ImageDataset must read both.
    for name, strings, itype in (("py_vlen.h5", False, np.int64), ("py_fixed.h5", True, np.int32)):
        with h5py.File(os.path.join(root, name), "w") as f:
            f["images"] = images[:4]
            f["labels"] = labels[:4]
            a = f["images"].attrs
            for k, v in dict(schema_version=1, count=4, height=6, width=5, channels=3, num_classes=4).items():
                a[k] = itype(v)
            names = ["T-shirt/top", "b", "c", "d"]
            a["class_names"] = np.array([n.encode() for n in names]) if strings else names
            a["source"] = np.bytes_(b"python") if strings else "python"

    with h5py.File(args.out, "w") as f:
        for k, v in g.items():
            f[k] = v


if __name__ == "__main__":
    main()
