#!/usr/bin/env python3
"""The disk fills while a checkpoint is written, two ways:
  ulimit -f   (RLIMIT_FSIZE, always): a run resumed under a 4000 KiB file-size limit writes
              model.pt and the EMA (2.8 MB each) of its next checkpoint, then optimizer.pt (5.7 MB)
              fails with EFBIG (ddpm_train ignores SIGXFSZ, which would otherwise kill it);
  tmpfs       (when `mount -t tmpfs` works, i.e. as root with CAP_SYS_ADMIN): a run in a 16 MiB
              tmpfs writes its first checkpoint (11.4 MB) and runs out of space (ENOSPC) in the next.
Either way: exit status 1 with one line on stderr naming the file, the cause and the fix; no
temporary folder left; the previous checkpoint intact, still `latest` and verifying; and once
there is room, the same command resumes from it and reaches --max-steps.
"""
import os
import resource
import subprocess
import sys

import faultlib as fl

SAVE_EVERY = 4
MAX_STEPS = 10
LIMIT_KIB = 4000


def check_failed_save(r, run_dir, cause, how):
    out = r.stdout + r.stderr
    assert r.returncode == 1, "%s: expected exit 1, got %d:\n%s" % (how, r.returncode, out)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, "%s: expected one line on stderr:\n%s" % (how, r.stderr)
    line = lines[0]
    for want in ("checkpoint of step %d not written" % (2 * SAVE_EVERY), cause, "Free space in",
                 "the previous checkpoint %s is intact" % fl.step_dir(run_dir, SAVE_EVERY),
                 "resume from step %d" % SAVE_EVERY):
        assert want in line, "%s: stderr lacks '%s':\n%s" % (how, want, line)
    assert fl.steps(run_dir) == [SAVE_EVERY], fl.steps(run_dir)
    left = [n for n in os.listdir(fl.checkpoints_dir(run_dir)) if n.startswith(".")]
    assert not left, "%s: temporaries left: %s" % (how, left)
    assert fl.latest(run_dir) == SAVE_EVERY
    assert fl.verify(fl.step_dir(run_dir, SAVE_EVERY)) is None, fl.verify(fl.step_dir(run_dir, SAVE_EVERY))
    return line


def resume_after_room(data, run_dir, how):
    r = fl.run([fl.TRAIN] + fl.tiny_flags(data, run_dir, MAX_STEPS, SAVE_EVERY))
    out = r.stdout + r.stderr
    assert r.returncode == 0, "%s: resume failed:\n%s" % (how, out)
    assert fl.resumed_step(out) == SAVE_EVERY, out
    assert fl.verify(fl.step_dir(run_dir, MAX_STEPS)) is None


def with_ulimit(work, data):
    run_dir = os.path.join(work, "run_ulimit")
    r = fl.run([fl.TRAIN] + fl.tiny_flags(data, run_dir, SAVE_EVERY, SAVE_EVERY))
    assert r.returncode == 0, r.stdout + r.stderr

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT_KIB * 1024, LIMIT_KIB * 1024))

    # OpenMPI's singleton start-up puts PMIx's shared-memory store in a file larger than the limit:
    # the hash store keeps it in memory.
    r = subprocess.run([fl.TRAIN] + fl.tiny_flags(data, run_dir, MAX_STEPS, SAVE_EVERY), capture_output=True,
                       text=True, timeout=90, preexec_fn=limit, env=fl.env_with(PMIX_MCA_gds="hash"))
    line = check_failed_save(r, run_dir, "optimizer.pt: write failed: File too large", "ulimit -f")
    resume_after_room(data, run_dir, "ulimit -f")
    fl.figure("disk full (ulimit -f %d KiB, EFBIG) while saving step %d: exit 1, one line "
              "\"...optimizer.pt: write failed: File too large ...; the previous checkpoint .../%06d is intact. "
              "Free space in ...\"; step %d verifies, no temporary left; resumed from it once the limit was lifted"
              % (LIMIT_KIB, 2 * SAVE_EVERY, SAVE_EVERY, SAVE_EVERY))
    print(line)


def with_tmpfs(work, data):
    mnt = os.path.join(work, "tmpfs")
    os.makedirs(mnt)
    m = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", mnt], capture_output=True, text=True)
    if m.returncode != 0:
        fl.figure("disk full (16 MiB tmpfs): not run, mount failed here: %s" % (m.stderr.strip() or m.returncode))
        return
    try:
        run_dir = os.path.join(mnt, "run")
        r = fl.run([fl.TRAIN] + fl.tiny_flags(data, run_dir, MAX_STEPS, SAVE_EVERY))
        line = check_failed_save(r, run_dir, "No space left on device", "tmpfs")
        subprocess.run(["mount", "-o", "remount,size=64m", mnt], check=True)
        resume_after_room(data, run_dir, "tmpfs")
        name = line.split(".tmp-", 1)[1].split("/", 1)[1].split(":", 1)[0]
        fl.figure("disk full (16 MiB tmpfs, ENOSPC) while saving step %d: exit 1, one line naming %s and "
                  "\"No space left on device\"; step %d intact and latest; resumed from it after the "
                  "tmpfs was grown" % (2 * SAVE_EVERY, name, SAVE_EVERY))
        print(line)
    finally:
        subprocess.run(["umount", mnt])


def main():
    fl.reset_figures()
    stale = os.path.join(fl.BINARY_DIR, "tmp", "fault", fl.TEST_NAME, "tmpfs")  # a killed earlier run's mount
    if os.path.ismount(stale):
        subprocess.run(["umount", stale])
    work = fl.workdir()
    data = fl.tiny_data(work)
    with_ulimit(work, data)
    with_tmpfs(work, data)
    print("OK")


if __name__ == "__main__":
    sys.exit(main())
