#!/usr/bin/env python3
"""kill -9 of one rank of a running `mpirun -np N ddpm_train` (N = 2 and 4), mid-step, after a
checkpoint exists. Checks that every rank and mpirun exit within 60 s (the figure: seconds), with a
non-zero status; that the same command with `--resume auto` (the default) continues from a
checkpoint at most one save interval behind the last logged step; and that it reaches --max-steps.
"""
import os
import signal
import sys
import time

import faultlib as fl

SAVE_EVERY = 5
MAX_STEPS = 24


def kill_one_rank(work, data, np_):
    run_dir = os.path.join(work, "run_np%d" % np_)
    cmd = fl.mpirun(np_) + [fl.TRAIN] + fl.tiny_flags(data, run_dir, MAX_STEPS, SAVE_EVERY)
    job = fl.Job(cmd, os.path.join(work, "np%d_first.log" % np_))
    pids = fl.rank_pids(job.p.pid, np_)
    # Some checkpoint exists and training has gone on past it: the kill lands mid-step.
    job.wait_for_text(r"checkpoint \S+/%06d " % SAVE_EVERY, 120)
    deadline = time.time() + 60
    while time.time() < deadline and (max(fl.log_steps(run_dir) or [0]) < SAVE_EVERY + 2):
        assert job.p.poll() is None, job.text()
        time.sleep(0.02)
    victim = 1
    t_kill = time.time()
    os.kill(pids[victim], signal.SIGKILL)
    rc = None
    while time.time() - t_kill < 60:
        rc = job.p.poll()
        if rc is not None and not any(fl.alive(p) for p in pids.values()):
            break
        time.sleep(0.02)
    seconds = time.time() - t_kill
    survivors = [r for r, p in pids.items() if fl.alive(p)]
    for p in pids.values():
        if fl.alive(p):
            os.kill(p, signal.SIGKILL)
    assert rc is not None, "mpirun still ran 60 s after kill -9 of rank %d:\n%s" % (victim, job.text())
    assert not survivors, "ranks %s survived kill -9 of rank %d by 60 s" % (survivors, victim)
    assert rc != 0, "mpirun exited 0 after a rank was killed:\n" + job.text()
    logged = max(fl.log_steps(run_dir))
    fl.figure("kill -9 rank %d of %d mid-step (step %d logged): all ranks and mpirun exited in %.1f s "
              "(mpirun status %d)" % (victim, np_, logged, seconds, rc))

    assert fl.latest(run_dir) is not None and fl.verify(fl.step_dir(run_dir, fl.latest(run_dir))) is None
    t0 = time.time()
    r = fl.run(cmd, timeout=100)
    out = r.stdout + r.stderr
    assert r.returncode == 0, "resume failed (%d):\n%s" % (r.returncode, out)
    resumed = fl.resumed_step(out)
    assert resumed is not None, "no 'resumed from' line:\n" + out
    # At most one save interval lost: the newest checkpoint is at most SAVE_EVERY steps behind.
    assert resumed >= logged - SAVE_EVERY, "resumed at %d, last logged step %d" % (resumed, logged)
    assert resumed % SAVE_EVERY == 0
    assert "done at step %d" % MAX_STEPS in out, out
    assert fl.verify(fl.step_dir(run_dir, MAX_STEPS)) is None
    fl.figure("  then --resume auto continued from step %d (last logged %d, save every %d: %d steps lost) "
              "and reached step %d in %.1f s" % (resumed, logged, SAVE_EVERY, logged - resumed, MAX_STEPS,
                                                 time.time() - t0))


def main():
    fl.reset_figures()
    work = fl.workdir()
    data = fl.tiny_data(work)
    for np_ in (2, 4):
        kill_one_rank(work, data, np_)
    print("OK")


if __name__ == "__main__":
    sys.exit(main())
