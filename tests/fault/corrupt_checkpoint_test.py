#!/usr/bin/env python3
"""A damaged newest checkpoint: bytes flipped in model.pt, an EMA file truncated, state.pt deleted.
`ddpm_train --resume auto` (the same command) must detect each by MANIFEST.json (size, SHA-256)
with a warning naming the folder and the file, fall back to the previous checkpoint, and go on to
--max-steps. With every checkpoint damaged it must stop with an error (exit 1), loading nothing.
"""
import os
import re
import shutil
import sys

import faultlib as fl

SAVE_EVERY = 4
MAX_STEPS = 10


def flip_bytes(path):
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        b = f.read(4)
        f.seek(-len(b), os.SEEK_CUR)
        f.write(bytes(x ^ 0xFF for x in b))


def truncate(path):
    os.truncate(path, os.path.getsize(path) // 2)


DAMAGE = [
    ("model.pt", flip_bytes, "flipped 4 bytes", r"model.pt fails its SHA-256 check"),
    ("ema_0.9999.pt", truncate, "truncated to half", r"ema_0.9999.pt has \d+ bytes, the manifest says \d+"),
    ("state.pt", os.remove, "deleted", r"state.pt is missing"),
]


def main():
    fl.reset_figures()
    work = fl.workdir()
    data = fl.tiny_data(work)
    base = os.path.join(work, "base")
    flags = fl.tiny_flags(data, base, 2 * SAVE_EVERY, SAVE_EVERY)
    r = fl.run([fl.TRAIN] + flags)
    assert r.returncode == 0, r.stdout + r.stderr
    assert fl.steps(base) == [SAVE_EVERY, 2 * SAVE_EVERY], fl.steps(base)
    ema = [n for n in os.listdir(fl.step_dir(base, 2 * SAVE_EVERY)) if n.startswith("ema_")]
    assert "ema_0.9999.pt" in ema, ema

    for name, damage, how, pattern in DAMAGE:
        run_dir = os.path.join(work, "run_" + name.replace(".", "_"))
        shutil.copytree(base, run_dir)
        newest = fl.step_dir(run_dir, 2 * SAVE_EVERY)
        damage(os.path.join(newest, name))
        cmd = [fl.TRAIN] + fl.tiny_flags(data, run_dir, MAX_STEPS, SAVE_EVERY)
        r = fl.run(cmd)
        out = r.stdout + r.stderr
        assert r.returncode == 0, "%s %s: resume failed (%d):\n%s" % (name, how, r.returncode, out)
        m = re.search(r"warning: skipping checkpoint %s: %s[^\n]*" % (re.escape(newest), pattern), out)
        assert m, "%s %s: no warning naming %s and %s:\n%s" % (name, how, newest, name, out)
        assert fl.resumed_step(out) == SAVE_EVERY, "%s: resumed at %s:\n%s" % (name, fl.resumed_step(out), out)
        assert "done at step %d" % MAX_STEPS in out, out
        for s in (2 * SAVE_EVERY, MAX_STEPS):  # the damaged step was written again, correctly
            assert fl.verify(fl.step_dir(run_dir, s)) is None, fl.verify(fl.step_dir(run_dir, s))
        said = re.sub(r"(: [0-9a-f]{64}.*|; trying an older checkpoint)$", "", m.group(0).split(": ", 2)[2])
        fl.figure("%s of the newest checkpoint %s: warning \"%s\", resumed from step %d instead of %d" %
                  (name, how, said, SAVE_EVERY, 2 * SAVE_EVERY))

    # Every checkpoint damaged: an error naming each, exit 1, nothing loaded or written.
    run_dir = os.path.join(work, "run_all")
    shutil.copytree(base, run_dir)
    for s in fl.steps(run_dir):
        flip_bytes(os.path.join(fl.step_dir(run_dir, s), "model.pt"))
    before = fl.tree(run_dir)
    r = fl.run([fl.TRAIN] + fl.tiny_flags(data, run_dir, MAX_STEPS, SAVE_EVERY))
    out = r.stdout + r.stderr
    assert r.returncode == 1, "expected exit 1 with no valid checkpoint:\n" + out
    assert "none of the 2 checkpoints" in r.stderr and "verifies" in r.stderr, r.stderr
    assert fl.resumed_step(out) is None, out
    assert fl.tree(run_dir) == before, "the failed resume changed the run dir"
    fl.figure("every checkpoint damaged: exit 1, \"none of the 2 checkpoints ... verifies\", run dir unchanged")
    print("OK")


if __name__ == "__main__":
    sys.exit(main())
