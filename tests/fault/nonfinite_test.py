#!/usr/bin/env python3
"""A NaN loss injected into one step attempt (test-only hook DDPM_TEST_NONFINITE_STEPS, on rank 1
only with DDPM_TEST_NONFINITE_RANK=1) of a 2-rank `mpirun ddpm_train`.

The step is skipped on every rank, and the ranks stay identical. The check: run A poisons rank 1
only, run C poisons every rank at the same attempt; their final checkpoints (model, EMA, optimizer,
every rank's RNG) must be bit-identical. In C every rank sees a local NaN, so the ranks act alike
whatever the code does; in A only rank 1 does. Had any rank acted on its own loss instead of on the
all-reduced gradients (rank 0 stepping while rank 1 skipped, say), rank 0's weights in A would
differ from C's, and since every later step averages both ranks' gradients, so would the
checkpoint that rank 0 writes. A run without injection must differ (the skip changed something).
Checked by mutation: an EMA update on the skipped step on the poisoned rank only fails this test
(ema_0.9999.pt differs); a rank that skips alone desynchronises the collectives (a hang, caught by
the 60 s bound).

The skip is counted: the warning line, `nonfinite_skipped` in log.jsonl (the same interval count
feeds the Prometheus counter ddpm_nonfinite_steps_skipped_total, the issue's
ddpm_nonfinite_steps_total) and `nonfinite_total` in the checkpoint's state.json. Then
--max-nonfinite-steps 3 with three poisoned attempts in a row stops the run with a clear error and
a non-zero exit status.
"""
import json
import os
import sys
import time

import faultlib as fl

MAX_STEPS = 8
POISON = 3  # the 3rd step attempt of the process


def train(work, data, name, extra_env, max_steps=MAX_STEPS, extra=()):
    run_dir = os.path.join(work, name)
    env = fl.env_with(**extra_env)
    t0 = time.time()
    # A bounded wait: ranks that disagree on a skip call different collectives and hang.
    r = fl.run(fl.mpirun(2) + [fl.TRAIN] + fl.tiny_flags(data, run_dir, max_steps, extra=extra), env=env, timeout=60)
    return run_dir, r, time.time() - t0


def manifest(run_dir, step):
    with open(os.path.join(fl.step_dir(run_dir, step), "MANIFEST.json")) as f:
        return {n: e["sha256"] for n, e in json.load(f)["files"].items() if n.endswith(".pt")}


def main():
    fl.reset_figures()
    work = fl.workdir()
    data = fl.tiny_data(work)

    a, r, seconds = train(work, data, "rank1", {"DDPM_TEST_NONFINITE_STEPS": POISON, "DDPM_TEST_NONFINITE_RANK": 1})
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "warning: non-finite gradients at step %d (1 in a row); step skipped" % POISON in out, out
    assert "done at step %d (%d images)" % (MAX_STEPS, (MAX_STEPS + 1) * 16) in out, out
    skipped = 0
    with open(os.path.join(a, "log.jsonl")) as f:
        for line in f:
            skipped += json.loads(line).get("nonfinite_skipped", 0)
    assert skipped == 1, "log.jsonl counts %d skipped steps" % skipped
    state = fl.state_json(a, MAX_STEPS)
    assert state["nonfinite_total"] == 1 and state["nonfinite_in_row"] == 0, state

    c, r, _ = train(work, data, "every_rank", {"DDPM_TEST_NONFINITE_STEPS": POISON})
    assert r.returncode == 0, r.stdout + r.stderr
    b, r, _ = train(work, data, "clean", {})
    assert r.returncode == 0, r.stdout + r.stderr
    ma, mc, mb = manifest(a, MAX_STEPS), manifest(c, MAX_STEPS), manifest(b, MAX_STEPS)
    assert ma == mc, "NaN on rank 1 only vs on every rank: final checkpoints differ in %s" % (
        [n for n in ma if ma[n] != mc.get(n)])
    assert ma["model.pt"] != mb["model.pt"], "the skipped step changed nothing"
    fl.figure("NaN loss on rank 1 of 2 at step %d: skipped on both ranks (warning, log.jsonl nonfinite_skipped=1, "
              "state.json nonfinite_total=1), run reached step %d in %.1f s; final model, EMA, optimizer and RNG "
              "bit-identical to a run with the NaN on every rank (%d files compared)"
              % (POISON, MAX_STEPS, seconds, len(ma)))

    d, r, seconds = train(work, data, "in_a_row", {"DDPM_TEST_NONFINITE_STEPS": "3,4,5", "DDPM_TEST_NONFINITE_RANK": 1},
                          extra=["--max-nonfinite-steps", "3"])
    out = r.stdout + r.stderr
    assert r.returncode != 0, "3 non-finite steps in a row with --max-nonfinite-steps 3 did not stop the run:\n" + out
    want = "step 3: 3 non-finite steps in a row"
    assert want in r.stderr and "--max-nonfinite-steps" in r.stderr, r.stderr
    assert "done at step" not in out
    fl.figure("3 NaN steps in a row with --max-nonfinite-steps 3: stopped in %.1f s, exit status %d, "
              "\"%s (loss or gradients NaN/inf; ...): stopping. Lower --lr, ...\"" % (seconds, r.returncode, want))
    print("OK")


if __name__ == "__main__":
    sys.exit(main())
