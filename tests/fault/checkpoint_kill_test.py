#!/usr/bin/env python3
"""kill -9 during a checkpoint write, at each point of CheckpointStore::save (the test-only hook
DDPM_TEST_CHECKPOINT_PAUSE=POINT@STEP makes ddpm_train print a marker and sleep there):
  files_written   every file of the new checkpoint is in .tmp-<step>-<pid>/, not renamed yet
  before_rename   the same, after the folder's parent was fsynced
  after_rename    the folder has its final name, `latest` still names the previous checkpoint
  latest_written  `latest` names the new checkpoint, old ones not pruned yet
For each: after the kill, `latest` names a checkpoint that verifies (MANIFEST.json sizes and
SHA-256), the same command resumes from a complete checkpoint (never the .tmp- folder), removes the
dead writer's temporary folder and reaches --max-steps.
"""
import os
import signal
import sys
import time

import faultlib as fl

SAVE_EVERY = 4
PAUSE_STEP = 8
MAX_STEPS = 10
POINTS = ["files_written", "before_rename", "after_rename", "latest_written"]


def kill_at(work, data, point):
    run_dir = os.path.join(work, "run_" + point)
    cmd = [fl.TRAIN] + fl.tiny_flags(data, run_dir, MAX_STEPS, SAVE_EVERY)
    job = fl.Job(cmd, os.path.join(work, point + "_first.log"),
                 env=fl.env_with(DDPM_TEST_CHECKPOINT_PAUSE="%s@%d" % (point, PAUSE_STEP)))
    job.wait_for_text(r"DDPM_TEST_CHECKPOINT_PAUSE: paused at %s of step %d" % (point, PAUSE_STEP), 120)
    os.kill(job.p.pid, signal.SIGKILL)
    job.p.wait()
    ckpts = fl.checkpoints_dir(run_dir)
    temporaries = [n for n in os.listdir(ckpts) if n.startswith(".tmp-")]
    named = fl.latest(run_dir)
    want_latest = PAUSE_STEP if point == "latest_written" else SAVE_EVERY
    assert named == want_latest, "%s: latest names %s, expected %d" % (point, named, want_latest)
    problem = fl.verify(fl.step_dir(run_dir, named))
    assert problem is None, "%s: latest (%d) does not verify: %s" % (point, named, problem)
    if point in ("files_written", "before_rename"):
        assert temporaries, "%s: expected the dead writer's .tmp- folder in %s" % (point, os.listdir(ckpts))
        assert fl.steps(run_dir) == [SAVE_EVERY], fl.steps(run_dir)

    r = fl.run(cmd)
    out = r.stdout + r.stderr
    assert r.returncode == 0, "%s: resume failed (%d):\n%s" % (point, r.returncode, out)
    resumed = fl.resumed_step(out)
    # The renamed folder is complete (its files were fsynced before the rename): resume may take it.
    want = SAVE_EVERY if point in ("files_written", "before_rename") else PAUSE_STEP
    assert resumed == want, "%s: resumed at %s, expected %d:\n%s" % (point, resumed, want, out)
    assert ".tmp-" not in out.split("resumed from ")[1].split()[0], out
    assert "done at step %d" % MAX_STEPS in out, out
    left = [n for n in os.listdir(ckpts) if n.startswith(".tmp-") or n.startswith(".trash-")]
    assert not left, "%s: temporaries left after the resumed run: %s" % (point, left)
    assert fl.verify(fl.step_dir(run_dir, MAX_STEPS)) is None
    fl.figure("kill -9 at checkpoint point %-14s: latest=%06d verifies, %s, resumed from step %d, reached %d" %
              (point, named, "half-written %s ignored" % temporaries[0].rsplit("-", 1)[0] if temporaries
               else "no temporary left", resumed, MAX_STEPS))


def main():
    fl.reset_figures()
    work = fl.workdir()
    data = fl.tiny_data(work)
    t0 = time.time()
    for point in POINTS:
        kill_at(work, data, point)
    print("OK (%.1f s)" % (time.time() - t0))


if __name__ == "__main__":
    sys.exit(main())
