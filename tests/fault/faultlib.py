"""Shared pieces of the fault-injection tests (tests/fault/, CTest label `fault`).

They drive the real build/bin/ddpm_train (alone or under mpirun) on a tiny dataset (64 grey 8x8
images made with ddpm_prepare, the `tiny` U-Net, T = 4), inject a fault, and check what a user
would see. Each test prints its measured outcome as `[figure] ...` lines and also writes them to
build/tmp/figures/<test>.txt, which launch/test.sh prints after ctest.
"""
import atexit
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np

BINARY_DIR = os.environ["DDPM_BINARY_DIR"]
TRAIN = os.path.join(BINARY_DIR, "bin", "ddpm_train")
PREPARE = os.path.join(BINARY_DIR, "bin", "ddpm_prepare")
MPIEXEC = os.environ.get("DDPM_MPIEXEC", "mpirun")
TEST_NAME = os.path.splitext(os.path.basename(sys.argv[0]))[0]
_started = []  # Popen objects, each in its own session: killed (by process group) at exit


def workdir(name=None):
    """A fresh empty folder build/tmp/fault/<name>."""
    path = os.path.join(BINARY_DIR, "tmp", "fault", name or TEST_NAME)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


def figure(line):
    """Prints `[figure] line` and appends it to build/tmp/figures/<test>.txt (the test's work
    folder left out of paths)."""
    line = line.replace(os.path.join(BINARY_DIR, "tmp", "fault", TEST_NAME) + "/", "")
    print("[figure] " + line, flush=True)
    folder = os.path.join(BINARY_DIR, "tmp", "figures")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, TEST_NAME + ".txt"), "a") as f:
        f.write("[figure] " + line + "\n")


def reset_figures():
    path = os.path.join(BINARY_DIR, "tmp", "figures", TEST_NAME + ".txt")
    if os.path.exists(path):
        os.remove(path)


def tiny_data(work, n=64):
    """n grey 8x8 images (class k = i mod 4 is a bright bar in rows 2k, 2k+1) -> work/bars.h5."""
    rng = np.random.default_rng(7)
    images = (rng.random((n, 8, 8, 1)) * 60).astype(np.uint8)  # (N, H, W, C)
    for i in range(n):
        images[i, 2 * (i % 4):2 * (i % 4) + 2] = 230
    np.save(os.path.join(work, "bars.npy"), images)
    out = os.path.join(work, "bars.h5")
    r = subprocess.run([PREPARE, os.path.join(work, "bars.npy"), "-o", out, "-q"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, "ddpm_prepare failed:\n" + r.stdout + r.stderr
    return out


def tiny_flags(data, run_dir, max_steps, save_every=1000, extra=()):
    return ["--data", data, "--run-dir", run_dir, "--model", "tiny",
            "--model-overrides", '{"in_channels":1,"out_channels":1}', "--schedule", "cosine",
            "--diffusion-steps", "4", "--global-batch", "16", "--max-steps", str(max_steps), "--lr", "1e-3",
            "--log-every", "1", "--save-every", str(save_every), "--sample-every", "0", "--metrics-addr", "none",
            "--seed", "5", "--sample-respacing", "2"] + list(extra)


def mpirun(np_):
    return [MPIEXEC, "-np", str(np_), "--oversubscribe"]


def env_with(**kw):
    env = dict(os.environ)
    env.update({k: str(v) for k, v in kw.items()})
    return env


def run(args, timeout=90, env=None):
    """Runs to completion; returns the CompletedProcess (stdout and stderr apart, as text)."""
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)


class Job:
    """A background process in its own session, stdout+stderr in `log`."""

    def __init__(self, args, log, env=None):
        self.log_path = log
        self.log = open(log, "w")
        self.p = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        _started.append(self.p)

    def text(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def wait_for_text(self, pattern, timeout):
        """Waits until the log matches `pattern` (regex); returns the match."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            m = re.search(pattern, self.text())
            if m:
                return m
            assert self.p.poll() is None, "exited (%s) before /%s/:\n%s" % (self.p.returncode, pattern, self.text())
            time.sleep(0.05)
        raise AssertionError("no /%s/ within %s s:\n%s" % (pattern, timeout, self.text()))


def _kill_all():
    for p in _started:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()


atexit.register(_kill_all)


def alive(pid):
    """Running (a zombie counts as ended)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def rank_pids(mpirun_pid, np_, timeout=60):
    """{rank: pid} of the ranks mpirun started (its children, rank from OMPI_COMM_WORLD_RANK)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        out = {}
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % pid) as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                if ppid != mpirun_pid:
                    continue
                with open("/proc/%s/environ" % pid, "rb") as f:
                    env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
                if b"OMPI_COMM_WORLD_RANK" in env:
                    out[int(env[b"OMPI_COMM_WORLD_RANK"])] = int(pid)
            except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
                continue
        if len(out) == np_:
            return out
        time.sleep(0.1)
    raise AssertionError("mpirun %d: found ranks %s, expected %d" % (mpirun_pid, out, np_))


# --- checkpoints, read as a user would (MANIFEST.json: sizes and SHA-256 of every file) -----------

def checkpoints_dir(run_dir):
    return os.path.join(run_dir, "checkpoints")


def latest(run_dir):
    """The step named by RUN/checkpoints/latest, or None."""
    try:
        with open(os.path.join(checkpoints_dir(run_dir), "latest")) as f:
            return int(f.read().strip())
    except FileNotFoundError:
        return None


def steps(run_dir):
    d = checkpoints_dir(run_dir)
    if not os.path.isdir(d):
        return []
    return sorted(int(n) for n in os.listdir(d) if n.isdigit() and os.path.isdir(os.path.join(d, n)))


def step_dir(run_dir, step):
    return os.path.join(checkpoints_dir(run_dir), "%06d" % step)


def verify(folder):
    """None when the checkpoint folder matches its MANIFEST.json, else what is wrong."""
    try:
        with open(os.path.join(folder, "MANIFEST.json")) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        return "MANIFEST.json: %s" % e
    for name in ("model.pt", "optimizer.pt", "state.pt", "state.json"):
        if name not in manifest.get("files", {}):
            return "MANIFEST.json lacks " + name
    for name, entry in manifest["files"].items():
        path = os.path.join(folder, name)
        if not os.path.exists(path):
            return name + " missing"
        if os.path.getsize(path) != entry["bytes"]:
            return name + " size differs"
        with open(path, "rb") as f:
            if hashlib.sha256(f.read()).hexdigest() != entry["sha256"]:
                return name + " SHA-256 differs"
    return None


def state_json(run_dir, step):
    with open(os.path.join(step_dir(run_dir, step), "state.json")) as f:
        return json.load(f)


def resumed_step(output):
    """The step of "resumed from PATH at step S" in ddpm_train's output, or None."""
    m = re.search(r"resumed from (\S+) at step (\d+)", output)
    return int(m.group(2)) if m else None


def log_steps(run_dir):
    """Steps logged in RUN/log.jsonl (per-step records)."""
    out = []
    try:
        with open(os.path.join(run_dir, "log.jsonl")) as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if "loss" in rec and "step" in rec:
                    out.append(rec["step"])
    except FileNotFoundError:
        pass
    return out


def tree(path):
    """{relative path: (size, mtime_ns)} of everything under `path` ({} when it does not exist)."""
    out = {}
    for root, dirs, files in os.walk(path):
        for n in dirs + files:
            p = os.path.join(root, n)
            st = os.lstat(p)
            out[os.path.relpath(p, path)] = (st.st_size if n in files else 0, st.st_mtime_ns)
    return out
