#!/usr/bin/env python3
"""Bad inputs to ddpm_train: an HDF5 file of the wrong schema, of the wrong dtype, a truncated one;
a configuration changed on resume; a checkpoint of another model (resumed, or as --init-from); an
unusable run dir; an unknown flag and a bad value. Each must exit 1 with ONE line on stderr that
names the file or flag and says what to do, and write nothing: no run dir where there was none, an
existing run dir unchanged (same files, sizes and times).
"""
import os
import subprocess
import sys

import h5py
import numpy as np

import faultlib as fl

MODEL = '{"in_channels":1,"out_channels":1}'
OTHER_MODEL = '{"in_channels":1,"out_channels":1,"model_channels":64}'


def flags(data, run_dir, extra=(), model=MODEL):
    """The tiny run's flags (6 steps, a checkpoint every 3); `extra` flags replace those given."""
    f = fl.tiny_flags(data, run_dir, 6, 3)
    f[f.index("--model-overrides") + 1] = model
    extra = list(extra)
    for i in range(0, len(extra) - 1, 2):
        if extra[i] in f:
            f[f.index(extra[i]) + 1] = extra[i + 1]
        else:
            f += extra[i:i + 2]
    return f


def expect_refused(what, args, run_dir, wants, check_absent=True):
    """Runs ddpm_train; checks exit 1, one stderr line holding every string of `wants`, nothing written."""
    before = fl.tree(run_dir)
    existed = os.path.exists(run_dir)
    r = fl.run([fl.TRAIN] + args, timeout=60)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode == 1, "%s: exit %d, expected 1:\n%s%s" % (what, r.returncode, r.stdout[-2000:], r.stderr)
    assert len(lines) == 1, "%s: expected one line on stderr, got %d:\n%s" % (what, len(lines), r.stderr)
    for w in wants:
        assert w in lines[0], "%s: stderr lacks '%s':\n%s" % (what, w, lines[0])
    if existed:
        assert fl.tree(run_dir) == before, "%s: the run dir %s changed" % (what, run_dir)
    elif check_absent:
        assert not os.path.exists(run_dir), "%s: %s was created" % (what, run_dir)
    said = lines[0].split(": error: ", 1)[-1]
    fl.figure("%s: exit 1, \"%s\", nothing written" % (what, said if len(said) < 150 else said[:147] + "..."))


def main():
    fl.reset_figures()
    work = fl.workdir()
    data = fl.tiny_data(work)
    fresh = os.path.join(work, "fresh")  # never created by any case

    wrong = os.path.join(work, "wrong_schema.h5")
    with h5py.File(wrong, "w") as f:
        f["pixels"] = np.zeros((16, 8, 8, 1), np.uint8)
    expect_refused("HDF5 without /images", flags(wrong, fresh), fresh, [wrong, "'/images' not found", "ddpm_prepare"])

    floats = os.path.join(work, "float_images.h5")
    with h5py.File(floats, "w") as f:
        f["images"] = np.zeros((16, 8, 8, 1), np.float32)
    expect_refused("HDF5 /images of float32", flags(floats, fresh), fresh, [floats, "float32", "expected uint8",
                                                                           "ddpm_prepare"])

    truncated = os.path.join(work, "truncated.h5")
    with open(data, "rb") as src, open(truncated, "wb") as dst:
        dst.write(src.read()[:os.path.getsize(data) // 2])
    expect_refused("truncated HDF5 (half its bytes)", flags(truncated, fresh), fresh,
                   [truncated, "truncated", "copy it again"])

    # A run with checkpoints, then resumes that change it.
    run_dir = os.path.join(work, "run")
    r = fl.run([fl.TRAIN] + flags(data, run_dir))
    assert r.returncode == 0, r.stdout + r.stderr
    state = os.path.join(fl.step_dir(run_dir, 6), "state.json")
    expect_refused("resume with a changed setting (--lr)", flags(data, run_dir, ["--lr", "2e-3"]), run_dir,
                   [state, "lr (saved 0.001, now 0.002)", "start a new --run-dir"])
    expect_refused("resume of a run dir trained with another model", flags(data, run_dir, model=OTHER_MODEL),
                   run_dir, [state, "model_overrides (saved", "start a new --run-dir"])
    weights = os.path.join(fl.step_dir(run_dir, 6), "model.pt")
    expect_refused("--init-from weights of another model", flags(data, fresh, ["--init-from", weights],
                                                                 model=OTHER_MODEL),
                   fresh, [weights, "mis-shaped keys (127)", "check that the model options"])

    expect_refused("--run-dir below a regular file", flags(data, os.path.join(data, "run")),
                   os.path.join(data, "run"), ["--run-dir " + os.path.join(data, "run"), "Not a directory",
                                               "pick a --run-dir in a writable folder"], check_absent=False)
    ro = os.path.join(work, "readonly")
    os.makedirs(ro)
    m = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", ro], capture_output=True, text=True)
    if m.returncode == 0:  # root ignores chmod; a read-only file system stops root too
        try:
            expect_refused("--run-dir on a read-only file system", flags(data, os.path.join(ro, "run")),
                           os.path.join(ro, "run"), ["--run-dir " + os.path.join(ro, "run"), "Read-only file system",
                                                     "pick a --run-dir"])
        finally:
            subprocess.run(["umount", ro])
    else:
        fl.figure("--run-dir on a read-only file system: not run, mount failed here: " + m.stderr.strip())

    expect_refused("unknown flag", flags(data, fresh, ["--no-such-flag", "3"]), fresh,
                   ["--no-such-flag", "run with --help"])
    expect_refused("bad value", flags(data, fresh, ["--ema-rates", "0.99,x"]), fresh,
                   ["--ema-rates", "'x' is not a number", "e.g. --ema-rates"])
    expect_refused("value out of range", flags(data, fresh, ["--keep-last", "-1"]), fresh, ["--keep-last", ">= 0"])
    expect_refused("flag given twice", flags(data, fresh) + ["--lr", "2e-3"], fresh, ["--lr is given more than once"])
    print("OK")


if __name__ == "__main__":
    sys.exit(main())
