#!/usr/bin/env python3
"""launch/slurm/ddpm_train.sbatch against a real single-node Slurm started here.

Starts munged (own key and socket), slurmctld and slurmd (Debian's slurm-wlm 22.05: proctrack/linuxproc,
task/none, state and spool in a temporary folder, free ports), then:
  1. submits the template with 2 ranks on CPU (tiny model, 8x8 data; DDPM_LAUNCHER=mpirun inside the
     allocation) and lets it run to --max-steps: the uninterrupted reference (exit 0, Restarts=0);
  2. submits the same command (default launcher: srun --mpi=pmix) into another run dir, sends
     `scancel --signal=USR1 --batch` once a few checkpoints exist, and checks: the batch shell
     forwarded the signal, ddpm_train checkpointed and exited 75, the script requeued the job, the
     requeued job logged SLURM_RESTART_COUNT=1, resumed from that checkpoint, reached --max-steps and
     completed (scontrol: COMPLETED, Restarts=1). The final model.pt and ema_*.pt of both runs are bit-identical (bytes and torch.load tensors);
  3. (--no-time-limit leaves it out) a job with --time=2 --signal=B:USR1@55 and far too many steps
     (DDPM_LAUNCHER=mpirun):
     Slurm's own warning signal makes it checkpoint, exit 75 and requeue; once it has resumed, a plain
     `scancel` (SIGTERM) checkpoints again but does not requeue: the job ends CANCELLED, Restarts=1.
Prints the seconds from the signal to the checkpoint and to the step's exit, the time the requeued
job waited, the totals and the restart count. Every daemon is stopped by PID at the end (and dies
with this process if it is killed: PR_SET_PDEATHSIG). Exit 77 (skipped) without the Slurm packages.
"""
import argparse
import ctypes
import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

SKIP = 77
MAX_STEPS = 60
SAVE_EVERY = 5
SIGNAL_AFTER_STEP = 10   # send USR1 once this checkpoint exists
TL_MINUTES, TL_GRACE = 2, 55  # the time-limit job: --time=2 --signal=B:USR1@55, USR1 due 65 s after its
                         # start; Slurm sends it up to 60 s early (measured here: 2-28 s early), and a
                         # USR1 before ddpm_train has installed its handler would kill the rank
CRED_EXPIRE = 10         # a requeued job may start again this many seconds later (Slurm default 120)


def log(msg):
    print("[slurm_test] " + msg, flush=True)


def die_with_parent():
    """preexec_fn: the daemon gets SIGTERM if this test dies (a CTest timeout kills it)."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, pred, timeout, interval=0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise TimeoutError("timed out after %ss waiting for %s" % (timeout, what))


class Cluster:
    """munged + slurmctld + slurmd in `work`; every process is tracked by PID and stopped in stop()."""

    def __init__(self, work):
        self.work = work
        self.host = socket.gethostname().split(".")[0]
        self.procs = []  # (name, Popen), in start order
        self.conf = os.path.join(work, "slurm.conf")
        self.env = dict(os.environ, SLURM_CONF=self.conf)

    def path(self, *p):
        return os.path.join(self.work, *p)

    def spawn(self, name, args):
        out = open(self.path("log", name + ".out"), "w")
        p = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                             preexec_fn=die_with_parent, start_new_session=True)
        self.procs.append((name, p))
        log("started %s (pid %d): %s" % (name, p.pid, " ".join(args)))
        return p

    def check_alive(self):
        for name, p in self.procs:
            if p.poll() is not None:
                raise RuntimeError("%s exited with %s:\n%s" % (name, p.returncode, self.tail(name)))

    def tail(self, name, n=30):
        text = ""
        for f in (self.path("log", name + ".out"), self.path("log", name + ".log")):
            if os.path.exists(f):
                text += "--- %s\n%s" % (f, "".join(open(f, errors="replace").readlines()[-n:]))
        return text

    def start(self):
        for d in ("munge", "state", "spool", "log"):
            os.makedirs(self.path(d))
        # munged wants its socket folder (and the folders above it) searchable by all, the key 0400.
        os.chmod(self.work, 0o755)
        os.chmod(self.path("munge"), 0o755)
        key = self.path("munge", "munge.key")
        with open(key, "wb") as f:
            f.write(os.urandom(1024))
        os.chmod(key, 0o400)
        sock = self.path("munge", "munge.sock")
        self.spawn("munged", ["munged", "--foreground", "--key-file=" + key, "--socket=" + sock,
                              "--pid-file=" + self.path("munge", "munged.pid"),
                              "--log-file=" + self.path("log", "munged.log"),
                              "--seed-file=" + self.path("munge", "munged.seed")])
        wait_for("the munge socket", lambda: (self.check_alive(), os.path.exists(sock))[1], 20)
        cred = subprocess.run("munge -S %s -n | unmunge -S %s" % (sock, sock), shell=True,
                              capture_output=True, text=True)
        assert cred.returncode == 0, "munge round trip failed: " + cred.stdout + cred.stderr

        conf = {
            "ClusterName": "ddpmtest",
            "SlurmctldHost": "%s(127.0.0.1)" % self.host,  # loopback: the host name need not resolve
            "SlurmctldPort": free_port(),
            "SlurmdPort": free_port(),
            "SlurmUser": "root",
            "SlurmdUser": "root",
            "AuthType": "auth/munge",
            "CredType": "cred/munge",
            # cred_expire: also how long a requeued job waits before it may start again.
            "AuthInfo": "socket=%s,cred_expire=%d" % (sock, CRED_EXPIRE),
            "StateSaveLocation": self.path("state"),
            "SlurmdSpoolDir": self.path("spool"),
            "SlurmctldPidFile": self.path("slurmctld.pid"),
            "SlurmdPidFile": self.path("slurmd.pid"),
            "SlurmctldLogFile": self.path("log", "slurmctld.log"),
            "SlurmdLogFile": self.path("log", "slurmd.log"),
            "ProctrackType": "proctrack/linuxproc",
            "TaskPlugin": "task/none",
            "SelectType": "select/cons_tres",
            "SelectTypeParameters": "CR_Core",
            "MpiDefault": "none",
            "ReturnToService": 2,
            "JobRequeue": 1,
            "MailProg": "/bin/true",
            "SchedulerType": "sched/backfill",
            # Pick up a requeued job as soon as its begin time passes (defaults: 60 s and 30 s).
            "SchedulerParameters": "sched_interval=1,bf_interval=1",
            "KillWait": 5,
            "InactiveLimit": 0,
        }
        lines = ["%s=%s" % kv for kv in conf.items()]
        lines.append("NodeName=%s NodeAddr=127.0.0.1 CPUs=%d RealMemory=1000 State=UNKNOWN" % (self.host, os.cpu_count()))
        lines.append("PartitionName=debug Nodes=%s Default=YES MaxTime=INFINITE State=UP" % self.host)
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        log("slurm.conf:\n  " + "\n  ".join(lines))
        self.spawn("slurmctld", ["slurmctld", "-D", "-f", self.conf])
        self.spawn("slurmd", ["slurmd", "-D", "-f", self.conf])

        def idle():
            self.check_alive()
            r = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, env=self.env)
            return r.returncode == 0 and r.stdout.strip() == "idle"
        try:
            wait_for("sinfo to show the node idle", idle, 60, 0.5)
        except Exception:
            log(self.tail("slurmctld") + self.tail("slurmd"))
            raise
        log("node %s idle" % self.host)

    def run(self, args, check=True, **kw):
        r = subprocess.run(args, capture_output=True, text=True, env=kw.pop("env", self.env), **kw)
        if check and r.returncode != 0:
            raise RuntimeError("%s failed (%d): %s%s" % (" ".join(args), r.returncode, r.stdout, r.stderr))
        return r

    def job(self, jid):
        """scontrol show job as a dict (empty once the controller forgot the job)."""
        r = self.run(["scontrol", "-o", "show", "job", str(jid)], check=False)
        if r.returncode != 0:
            return {}
        return dict(kv.split("=", 1) for kv in r.stdout.split() if "=" in kv)

    def stepds(self):
        """PIDs of the slurmstepd processes of this cluster (slurmd's children, reparented to init)."""
        pids = []
        for d in glob.glob("/proc/[0-9]*"):
            try:
                if open(d + "/comm").read().strip() == "slurmstepd" and \
                        ("SLURM_CONF=" + self.conf).encode() in open(d + "/environ", "rb").read():
                    pids.append(int(d[6:]))
            except OSError:
                pass
        return pids

    def stop(self):
        if any(p.poll() is None for n, p in self.procs if n == "slurmctld"):
            self.run(["scancel", "--user=root"], check=False, timeout=20)
            try:
                wait_for("the jobs to end", lambda: not self.run(["squeue", "-h"], check=False).stdout.strip(), 30, 0.5)
            except TimeoutError as e:
                log("warning: %s" % e)
        try:
            wait_for("slurmstepd to exit", lambda: not self.stepds(), 15, 0.2)
        except TimeoutError:
            log("warning: slurmstepd still running: %s" % self.stepds())
        for name, p in reversed(self.procs):  # slurmd, slurmctld, munged
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    log("%s (pid %d) ignored SIGTERM: SIGKILL" % (name, p.pid))
                    p.kill()
                    p.wait(5)
            log("stopped %s (pid %d, status %s)" % (name, p.pid, p.returncode))
        left = subprocess.run(["pgrep", "-f", self.work], capture_output=True, text=True).stdout.split()
        left = [x for x in left if int(x) != os.getpid()] + self.stepds()
        if left:
            log("warning: processes still using %s: %s" % (self.work, left))
        return not left


def write_dataset(work, prepare):
    """64 grey 8x8 images: class k (i mod 4) is a bright bar in rows 2k, 2k+1 over noise."""
    import numpy as np
    rng = np.random.default_rng(7)
    images = (rng.random((64, 8, 8, 1)) * 60).astype(np.uint8)
    for i in range(64):
        images[i, 2 * (i % 4):2 * (i % 4) + 2] = 230
    np.save(os.path.join(work, "bars.npy"), images)
    out = os.path.join(work, "bars.h5")
    subprocess.run([prepare, os.path.join(work, "bars.npy"), "-o", out, "-q"], check=True,
                   capture_output=True, timeout=120)
    return out


def train_args(data, run_dir):
    return ["--data", data, "--run-dir", run_dir, "--model", "tiny",
            "--model-overrides", '{"in_channels":1,"out_channels":1}', "--schedule", "cosine",
            "--diffusion-steps", "4", "--sample-respacing", "2", "--global-batch", "16",
            "--max-steps", str(MAX_STEPS), "--lr", "1e-3", "--ema-rates", "0.99", "--seed", "5",
            "--log-every", "5", "--save-every", str(SAVE_EVERY), "--keep-last", "0"]


def submit(cl, a, name, args, sbatch_opts=(), **env):
    out = os.path.join(cl.work, name + ".out")
    r = cl.run(["sbatch", "--parsable", "--ntasks=2", "--job-name=" + name, "--output=" + out,
                "--chdir=" + cl.work] + list(sbatch_opts) + [a.sbatch] + args, env=dict(cl.env, **env))
    jid = r.stdout.strip().split(";")[0]
    log("submitted %s: job %s" % (name, jid))
    return jid, out


def wait_done(cl, jid, out, timeout):
    """Until the job is COMPLETED / FAILED / ...; returns scontrol's fields."""
    def done():
        j = cl.job(jid)
        cl.check_alive()
        return j if j.get("JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL",
                                          "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "PREEMPTED") else None
    try:
        return wait_for("job %s to end" % jid, done, timeout, 0.5)
    except TimeoutError:
        log("job %s: %s\n%s" % (jid, cl.job(jid), open(out).read() if os.path.exists(out) else "(no output)"))
        log(cl.tail("slurmctld") + cl.tail("slurmd"))
        raise


def compare_weights(ref_dir, run_dir, python):
    """model.pt and ema_*.pt of the final checkpoints: identical bytes and tensors."""
    final = "%06d" % MAX_STEPS
    a = os.path.join(ref_dir, "checkpoints", final)
    b = os.path.join(run_dir, "checkpoints", final)
    names = ["model.pt"] + sorted(os.path.basename(p) for p in glob.glob(os.path.join(a, "ema_*.pt")))
    assert len(names) == 2, "expected model.pt and one ema file in %s: %s" % (a, os.listdir(a))
    for n in names:
        same = open(os.path.join(a, n), "rb").read() == open(os.path.join(b, n), "rb").read()
        log("%-14s bytes identical: %s" % (n, same))
        assert same, "%s differs between the uninterrupted and the requeued run" % n
    code = ("import sys, torch\n"
            "for n in sys.argv[3:]:\n"
            "    x = torch.load(sys.argv[1] + '/' + n); y = torch.load(sys.argv[2] + '/' + n)\n"
            "    assert x.keys() == y.keys() and x, n\n"
            "    bad = [k for k in x if not torch.equal(x[k], y[k])]\n"
            "    assert not bad, (n, bad)\n"
            "    print('[slurm_test] %-14s %d tensors, %d values: torch.equal' % (n, len(x), sum(v.numel() for v in x.values())))\n")
    subprocess.run([python, "-c", code, a, b] + names, check=True, timeout=120)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    bindir = os.path.join(os.environ.get("DDPM_BINARY_DIR", ""), "bin")
    src = os.environ.get("DDPM_SOURCE_DIR", os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    ap.add_argument("--bin-dir", default=os.environ.get("DDPM_BIN_DIR", bindir),
                    help="folder of ddpm_train and ddpm_prepare (default $DDPM_BIN_DIR, $DDPM_BINARY_DIR/bin)")
    ap.add_argument("--source-dir", default=src, help="repository root (launch/env.sh, launch/slurm/)")
    ap.add_argument("--python", default=os.environ.get("DDPM_PYTHON", sys.executable), help="python with torch")
    ap.add_argument("--workdir", default="", help="parent of the temporary folder (default $TMPDIR or /tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--no-time-limit", dest="time_limit", action="store_false",
                    help="leave out the real time-limit job (--time=%d --signal=B:USR1@%d, 1-1.5 minutes)" % (TL_MINUTES, TL_GRACE))
    a = ap.parse_args()
    a.train = os.path.join(a.bin_dir, "ddpm_train")
    a.prepare = os.path.join(a.bin_dir, "ddpm_prepare")
    a.sbatch = os.path.join(a.source_dir, "launch", "slurm", "ddpm_train.sbatch")
    for f in (a.train, a.prepare, a.sbatch):
        assert os.path.exists(f), "missing %s (set --bin-dir / --source-dir)" % f

    missing = [p for p in ("munged", "munge", "unmunge", "slurmctld", "slurmd", "sbatch", "scontrol", "sinfo",
                           "scancel", "srun") if not shutil.which(p, path=os.environ["PATH"] + ":/usr/sbin:/sbin")]
    if missing:
        log("SKIP: not installed: %s (launch/setup.sh installs slurmctld slurmd slurm-client munge)" % " ".join(missing))
        return SKIP
    os.environ["PATH"] += ":/usr/sbin:/sbin"

    t_all = time.time()
    work = tempfile.mkdtemp(prefix="ddpm-slurm-", dir=a.workdir or None)
    cl = Cluster(work)
    # The jobs inherit this environment (sbatch --export=ALL): the template sources launch/env.sh.
    cl.env.update(DDPM_ROOT=a.source_dir, DDPM_TRAIN=a.train, OMP_NUM_THREADS="1")
    ok = False
    try:
        cl.start()
        t_up = time.time() - t_all
        data = write_dataset(work, a.prepare)

        # 1. The uninterrupted reference, through the same template with the other launcher (mpirun
        # inside the allocation; the interrupted job takes the default, srun --mpi=pmix).
        t0 = time.time()
        ref_dir = os.path.join(work, "run_ref")
        jid, out = submit(cl, a, "ref", train_args(data, ref_dir), DDPM_LAUNCHER="mpirun")
        j = wait_done(cl, jid, out, 120)
        text = open(out).read()
        t_ref = time.time() - t0
        assert j["JobState"] == "COMPLETED" and j["ExitCode"] == "0:0" and j["Restarts"] == "0", (j, text)
        assert "SLURM_RESTART_COUNT=0" in text and "done at step %d" % MAX_STEPS in text, text
        assert "launcher mpirun:" in text, text
        log("reference job %s (launcher mpirun): COMPLETED in %.1f s" % (jid, t_ref))

        # 2. The interrupted one: USR1 to the batch shell once a checkpoint exists, as at a time limit.
        t0 = time.time()
        run_dir = os.path.join(work, "run_requeue")
        jid, out = submit(cl, a, "requeue", train_args(data, run_dir))
        first_ckpt = os.path.join(run_dir, "checkpoints", "%06d" % SIGNAL_AFTER_STEP, "MANIFEST.json")
        wait_for("checkpoint %d of job %s" % (SIGNAL_AFTER_STEP, jid),
                 lambda: (cl.check_alive(), os.path.exists(first_ckpt))[1], 120, 0.05)
        t_sig = time.time()
        cl.run(["scancel", "--signal=USR1", "--batch", jid])
        log("scancel --signal=USR1 --batch %s sent %.1f s after submission" % (jid, t_sig - t0))
        j = wait_done(cl, jid, out, 150)
        t_total = time.time() - t0
        text = open(out).read()
        assert j["JobState"] == "COMPLETED" and j["ExitCode"] == "0:0", (j, text)
        mpis = cl.run(["srun", "--mpi=list"])
        want = "srun" if "pmix" in mpis.stdout + mpis.stderr else "mpirun"
        assert "launcher %s:" % want in text, "expected the launcher %s:\n%s" % (want, text)
        assert j["Restarts"] == "1", "scontrol reports Restarts=%s, expected 1:\n%s" % (j["Restarts"], text)

        # The first run: signal forwarded, checkpoint, exit 75, requeue.
        first, _, second = text.partition("SLURM_RESTART_COUNT=1 ")
        assert second, "the requeued job did not log SLURM_RESTART_COUNT=1:\n" + text
        assert "SLURM_RESTART_COUNT=0" in first, text
        m = re.search(r"got SIGUSR1 at ([0-9.]+)", first)
        assert m, "the batch shell did not log the forwarded SIGUSR1:\n" + first
        t_fwd = float(m.group(1))
        m = re.search(r"stopped at step (\d+) \(\d+ images\); checkpoint (\S+); exit status 75", first)
        assert m, "ddpm_train did not stop with a checkpoint and exit 75:\n" + first
        stop_step, stop_ckpt = int(m.group(1)), m.group(2)
        assert SIGNAL_AFTER_STEP <= stop_step < MAX_STEPS, stop_step
        m = re.search(r"ddpm_train exited 75 at ([0-9.]+)", first)
        assert m and "requeueing job %s" % jid in first, first
        t_exit = float(m.group(1))
        ckpt_time = os.path.getmtime(os.path.join(stop_ckpt, "MANIFEST.json"))
        # The second run: resumed from that checkpoint, to the end.
        m = re.search(r"resumed from (\S+) at step (\d+)", second)
        assert m and m.group(1) == stop_ckpt and int(m.group(2)) == stop_step, \
            "the requeued job did not resume from %s:\n%s" % (stop_ckpt, second)
        assert "done at step %d" % MAX_STEPS in second and "ddpm_train exited 0" in second, second
        m = re.search(r"job %s on \S+: SLURM_RESTART_COUNT=1 .*?started at ([0-9.]+)" % jid, text)
        t_restart = float(m.group(1)) if m else float("nan")
        compare_weights(ref_dir, run_dir, a.python)
        log("figures (scancel --signal=USR1 --batch): USR1 -> batch shell %.2f s, -> checkpoint step %d written "
            "%.2f s, -> job step exited 75 %.2f s; requeue -> restarted %.1f s later (cred_expire=%d + "
            "scheduling); submit -> COMPLETED %.1f s; restart count %s"
            % (t_fwd - t_sig, stop_step, ckpt_time - t_sig, t_exit - t_sig, t_restart - t_exit, CRED_EXPIRE,
               t_total, j["Restarts"]))

        # 3. The real time limit: --time=TL_MINUTES --signal=B:USR1@TL_GRACE, a run far too long to end. Slurm
        # itself must send USR1 before the limit; the job checkpoints, is requeued and resumes.
        if a.time_limit:
            t0 = time.time()
            tl_dir = os.path.join(work, "run_timelimit")
            args = train_args(data, tl_dir)
            args[args.index("--max-steps") + 1] = "1000000"
            args[args.index("--save-every") + 1] = "100000"
            # Through mpirun this time: the batch shell forwards USR1 to mpirun, which passes it on.
            jid, out = submit(cl, a, "timelimit", args, ["--time=%d" % TL_MINUTES, "--signal=B:USR1@%d" % TL_GRACE],
                              DDPM_LAUNCHER="mpirun")
            wait_for("job %s to be requeued by its time limit and resume" % jid,
                     lambda: (cl.check_alive(), "resumed from" in open(out).read() if os.path.exists(out) else 0)[1],
                     TL_MINUTES * 60 + 60, 0.5)
            # A plain scancel (SIGTERM) still checkpoints, but must not requeue: the job ends CANCELLED.
            t_cancel = time.time()
            cl.run(["scancel", jid])
            j = wait_done(cl, jid, out, 60)
            text = open(out).read()
            first, _, second = text.partition("SLURM_RESTART_COUNT=1 ")
            assert j["JobState"] == "CANCELLED" and j["Restarts"] == "1", (j, text)
            assert "launcher mpirun:" in first, first
            assert "SLURM_RESTART_COUNT=2" not in text and "requeueing" not in second, text
            # OpenMPI's mpirun answers SIGTERM by killing its ranks (exit 1, no checkpoint); under srun
            # the ranks get the SIGTERM and checkpoint (exit 75, "not requeued").
            m = re.search(r"ddpm_train exited (\d+) at ([0-9.]+)", second)
            assert m and (m.group(1) == "75" and "not requeued" in second or
                          m.group(1) == "1" and "launcher mpirun:" in second), second
            cancel = "checkpoint and exit 75" if m.group(1) == "75" else "mpirun killed the ranks (exit 1, no checkpoint)"
            t_cancel_exit = float(m.group(2)) - t_cancel
            t_start = float(re.search(r"SLURM_RESTART_COUNT=0 started at ([0-9.]+)", first).group(1))
            m = re.search(r"got SIGUSR1 at ([0-9.]+)", first)
            assert m, "Slurm sent no USR1 before the time limit:\n" + text
            t_usr1 = float(m.group(1))
            stop = re.search(r"stopped at step (\d+) \(\d+ images\); checkpoint (\S+); exit status 75", first)
            assert stop and "requeueing job %s" % jid in first, first
            assert re.search(r"resumed from %s at step %s" % (re.escape(stop.group(2)), stop.group(1)), second), second
            t_exit = float(re.search(r"ddpm_train exited 75 at ([0-9.]+)", first).group(1))
            limit = TL_MINUTES * 60
            assert j["Restarts"] == "1" and t_usr1 - t_start < limit, (j, t_usr1 - t_start)
            log("figures (--time=%d --signal=B:USR1@%d): USR1 came %.1f s after the start (%d s expected; Slurm "
                "may send it up to 60 s early), checkpoint at step %s and exit 75 %.2f s later, %.1f s before "
                "the limit; requeued, resumed from step %s; scancel -> %s in %.2f s, not requeued (%s, Restarts=%s)"
                % (TL_MINUTES, TL_GRACE, t_usr1 - t_start, limit - TL_GRACE, stop.group(1), t_exit - t_usr1,
                   limit - (t_exit - t_start),
                   stop.group(1), cancel, t_cancel_exit, j["JobState"], j["Restarts"]))
            t_tl = time.time() - t0
        log("figures: cluster up in %.1f s; reference run %.1f s; interrupted run %.1f s%s; whole test %.1f s"
            % (t_up, t_ref, t_total, "; time-limit run %.1f s" % t_tl if a.time_limit else "", time.time() - t_all))
        ok = True
    finally:
        clean = cl.stop()
        if ok and clean and not a.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log("kept %s (logs in log/, job outputs *.out)" % work)
    log("PASS" if ok else "FAIL")
    return 0 if ok and clean else 1


if __name__ == "__main__":
    sys.exit(main())
