#!/usr/bin/env python3
"""Monitoring of a real `mpirun -np 2 ddpm_train` run against real servers on 127.0.0.1 (labels mpi, cpu).

Starts Debian's prometheus-pushgateway, a 2-rank tiny training run (8x8 images, T = 8, FID with a
TorchScript extractor and bits/dim every few steps, metrics on a free port, pushes to the gateway)
and prometheus scraping rank 0 every second with monitoring/prometheus/prometheus.yml (README's). Checks:
  1. `promtool check metrics` accepts the endpoint's output;
  2. every PromQL expression of monitoring/grafana/ddpm.json returns data from this run through
     /api/v1/query (GPU memory on this CPU run: the dashboard's fallback series, checked and named),
     except the task-term panel's (ddpm_task_term), which has none for a diffusion run;
  3. SIGUSR1 to mpirun (forwarded to the ranks) stops the run with exit 75 and the final push
     carries ddpm_exit_status 75;
  4. the requeued run (same command, 1 rank, two more steps) exits 0, pushes ddpm_exit_status 0, its
     final FID and a ddpm_bpd equal to what ddpm_eval computes for its final checkpoint;
  5. a run that fails at start (model/data channel mismatch) exits 1 and still pushes status 1;
  6. a 1-rank `--task classifier` run (labelled copy of the data), scraped by the same prometheus:
     the task-term panel's expressions return its accuracy over all t and for q0..q3, each value
     one that its log.jsonl holds for that interval; SIGTERM stops it with exit 75.
Every wait is bounded; every server and run is stopped on any exit.
"""
import argparse
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np

RUN_ID = "itrain-%d" % os.getpid()
BPD_SAMPLES = 8
FID_SAMPLES = 16
procs = []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A process in its own session with its output in WORK/<name>.log (and in .lines)."""

    def __init__(self, name, args, work):
        self.name, self.lines = name, []
        self.log = open(os.path.join(work, name + ".log"), "w")
        self.p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  start_new_session=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        procs.append(self)

    def _read(self):
        for line in self.p.stdout:
            self.lines.append(line.rstrip("\n"))
            self.log.write(line)
            self.log.flush()

    def text(self):
        return "\n".join(self.lines)

    def wait(self, timeout):
        rc = self.p.wait(timeout=timeout)
        self.reader.join(timeout=5)
        return rc

    def stop(self):
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGTERM)
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait(timeout=10)


def get(url, timeout=3):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def wait_for(what, fn, timeout, proc=None):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        if proc is not None and proc.p.poll() is not None:
            raise RuntimeError("%s exited with %s while waiting for %s:\n%s" % (proc.name, proc.p.returncode, what,
                                                                                proc.text()[-3000:]))
        try:
            v = fn()
            if v:
                return v
        except (OSError, urllib.error.URLError, ValueError) as e:
            last = e
        time.sleep(0.25)
    raise TimeoutError("timed out after %ss waiting for %s (last error: %s)" % (timeout, what, last))


def run_quiet(args, timeout, **kw):
    r = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kw)
    if r.returncode != 0:
        raise RuntimeError("%s failed (%d):\n%s%s" % (" ".join(args), r.returncode, r.stdout, r.stderr))
    return r.stdout


# --- inputs: a tiny dataset (through ddpm_prepare) and a TorchScript feature extractor ---------

def write_dataset(work, prepare):
    """64 grey 8x8 images: class k (i mod 4) is a bright bar in rows 2k, 2k+1 over noise. Returns
    the unlabelled file and a copy with the labels k (for the classifier run)."""
    rng = np.random.default_rng(7)
    images = (rng.random((64, 8, 8, 1)) * 60).astype(np.uint8)  # (N, H, W, C)
    for i in range(64):
        images[i, 2 * (i % 4):2 * (i % 4) + 2] = 230
    np.save(os.path.join(work, "bars.npy"), images)
    np.save(os.path.join(work, "bars_labels.npy"), np.arange(64, dtype=np.int64) % 4)
    out, labelled = os.path.join(work, "bars.h5"), os.path.join(work, "bars_labelled.h5")
    run_quiet([prepare, os.path.join(work, "bars.npy"), "-o", out, "-q"], 120)
    run_quiet([prepare, os.path.join(work, "bars.npy"), "--labels", os.path.join(work, "bars_labels.npy"),
               "-o", labelled, "-q"], 120)
    return out, labelled


def write_extractor(work):
    """(N, C, H, W) in [0, 1] -> (N, 16) features: 4x4 average pooling and a fixed projection."""
    import torch

    class Features(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("w", torch.randn(16, 16, generator=torch.Generator().manual_seed(0)))

        def forward(self, x):
            x = torch.nn.functional.adaptive_avg_pool2d(x.mean(1, keepdim=True), 4).flatten(1)  # (N, 16)
            return torch.tanh(x @ self.w)

    path = os.path.join(work, "features.pt")
    torch.jit.save(torch.jit.script(Features()), path)
    return path


def train_args(a, data, run_dir, extractor, work, max_steps, gw_port, metrics_addr):
    return [a.train, "--data", data, "--run-dir", run_dir, "--model", "tiny",
            "--model-overrides", '{"in_channels":1,"out_channels":1}', "--schedule", "cosine",
            "--diffusion-steps", "8", "--global-batch", "16", "--max-steps", str(max_steps), "--lr", "1e-3",
            "--ema-rates", "0.99", "--seed", "5", "--log-every", "2", "--save-every", "10", "--keep-last", "2",
            "--sample-respacing", "2", "--bpd-every", "10", "--bpd-samples", str(BPD_SAMPLES),
            "--fid-every", "10", "--fid-samples", str(FID_SAMPLES), "--fid-extractor", "torchscript:" + extractor,
            "--fid-sampling", "2", "--fid-stats", os.path.join(work, "fid_stats.h5"),
            "--metrics-addr", metrics_addr, "--pushgateway", "127.0.0.1:%d" % gw_port]


def classifier_args(a, data, run_dir, metrics_addr):
    """A 1-rank noise classifier (the tiny U-Net's encoder half, attention pooling over 4x4)."""
    return [a.train, "--task", "classifier", "--data", data, "--run-dir", run_dir, "--model", "tiny",
            "--model-overrides", '{"in_channels":1,"image_size":8,"num_head_channels":32}', "--num-classes", "4",
            "--schedule", "cosine", "--diffusion-steps", "8", "--sample-respacing", "2", "--global-batch", "16",
            "--max-steps", "1000000", "--lr", "1e-3", "--ema-rates", "0.99", "--seed", "6", "--log-every", "10",
            "--save-every", "1000000", "--metrics-addr", metrics_addr]


# --- Prometheus --------------------------------------------------------------------------------

def prometheus_config(template, path, targets):
    """monitoring/prometheus/prometheus.yml (README's), with the runs' targets and 1s intervals."""
    text = open(template).read()
    listed = ", ".join("'%s'" % t for t in targets)
    for old, new in (("scrape_interval: 15s", "scrape_interval: 1s"), ("evaluation_interval: 15s", "evaluation_interval: 1s"),
                     ("- targets: ['localhost:9464']", "- targets: [%s]" % listed)):
        assert old in text, "%s no longer has %r: update the test" % (template, old)
        text = text.replace(old, new)
    with open(path, "w") as f:
        f.write(text)


def dashboard_exprs(path):
    dash = json.load(open(path))
    return [(p["title"], t["expr"]) for p in dash["panels"] for t in p.get("targets", [])]


def is_task_term(expr):
    """The task-term panel's expressions: a task's own terms, none in a diffusion run."""
    return "ddpm_task_term" in expr


def query(prom, expr, run_id=RUN_ID):
    e = expr.replace("$run_id", run_id).replace("$__rate_interval", "30s")
    assert "$" not in e, "unsubstituted variable in " + e
    r = json.loads(get(prom + "/api/v1/query?" + urllib.parse.urlencode({"query": e})))
    assert r["status"] == "success", r
    return r["data"]["result"]


def check_dashboard(prom, exprs, deadline, run_id=RUN_ID):
    pending = list(exprs)
    while pending and time.time() < deadline:
        pending = [(t, e) for t, e in pending if not query(prom, e, run_id)]
        if pending:
            time.sleep(1)
    for t, e in exprs:
        res = query(prom, e, run_id)
        print("query %-30s %2d series  %s" % (t[:30], len(res), e[:110]))
    assert not pending, "dashboard queries without data from the training run %s: %s" % (run_id, pending)


def task_term_values(prom, exprs, run_id):
    """The task-term panel's series of the classifier run: {quartile ("" = all t): value}."""
    got = {}
    for _, e in exprs:
        for s in query(prom, e, run_id):
            m = s["metric"]
            assert m["run_id"] == run_id and m["term"] == "accuracy", m
            got[m.get("quartile", "")] = float(s["value"][1])
    assert sorted(got) == ["", "q0", "q1", "q2", "q3"], "task-term series by quartile: %s" % sorted(got)
    return got


def check_task_terms(got, run_dir):
    """Each value the panel showed is a logged interval's mean (log.jsonl's accuracy / accuracy_qK,
    read after the run stopped)."""
    recs = [r for r in map(json.loads, open(os.path.join(run_dir, "log.jsonl"))) if r.get("event") == "train"]
    for q, v in sorted(got.items()):
        key = "accuracy" + ("_" + q if q else "")
        logged = [r[key] for r in recs if key in r]
        diff = min(abs(v - x) for x in logged)
        print("[maxdiff] ddpm_task_term{term=\"accuracy\", quartile=\"%s\"} %.6f: nearest of %d logged %s %.3g "
              "(tol 1e-12)" % (q, v, len(logged), key, diff))
        assert 0 <= v <= 1 and diff <= 1e-12, "%s = %s is no logged interval's value" % (key, v)


def one(prom, expr):
    res = query(prom, expr)
    assert len(res) == 1, "%s: expected one series, got %s" % (expr, res)
    return res[0]["metric"], float(res[0]["value"][1])


def check_values(prom, extractor):
    """What the panels show is this run's: world size, device, per-rank series, FID/bpd labels."""
    r = '{run_id="%s"}' % RUN_ID
    assert one(prom, "ddpm_world_size" + r)[1] == 2
    labels, _ = one(prom, "ddpm_build_info" + r)
    assert labels["device"] == "cpu", labels
    ranks = sorted(s["metric"]["rank"] for s in query(prom, "ddpm_rank_allreduce_wait_seconds_total" + r))
    assert ranks == ["0", "1"], ranks
    labels, fid = one(prom, "ddpm_fid" + r)
    print("FID %.4f %s" % (fid, labels))
    assert labels["extractor"] == "torchscript:" + os.path.basename(extractor), labels
    assert labels["samples"] == str(FID_SAMPLES) and labels["ema_rate"] == "0.99", labels
    assert math.isfinite(fid) and fid >= 0, fid
    labels, bpd = one(prom, "ddpm_bpd" + r)
    print("bits/dim %.4f %s" % (bpd, labels))
    assert labels["samples"] == str(BPD_SAMPLES) and labels["ema_rate"] == "0.99", labels
    assert 0 < bpd < 64, bpd
    _, rss = one(prom, "ddpm_process_resident_memory_bytes" + r)
    assert rss > 50e6, "rank 0 resident memory %.0f bytes: torch alone needs more" % rss
    assert not query(prom, "ddpm_gpu_memory_allocated_bytes" + r), "a CPU run exported GPU memory"
    # GPU memory cannot have data on a CPU run (no CUDA device; the trainer never touches CUDA
    # there): the dashboard's `or` fallback gives one 0-valued series named after the reason.
    for metric in ("allocated", "reserved", "peak_allocated"):
        expr = [e for _, e in dashboard_exprs(ARGS.dashboard) if "ddpm_gpu_memory_%s_bytes" % metric in e]
        assert len(expr) == 1, "dashboard has no query for ddpm_gpu_memory_%s_bytes" % metric
        labels, v = one(prom, expr[0])
        assert labels.get("device") == "none (cpu run)" and v == 0, (labels, v)
    print("GPU memory queries: CPU run, no CUDA device: the dashboard's fallback series (device=\"none (cpu run)\", 0)")


# --- the Pushgateway ---------------------------------------------------------------------------

def gateway_value(gw_port, metric, run_id):
    """Value of `metric` in the group job=ddpm/run_id=<run_id>, or None."""
    want = '%s{instance="",job="ddpm",run_id="%s"} ' % (metric, run_id)
    for line in get("http://127.0.0.1:%d/metrics" % gw_port).splitlines():
        if line.startswith(want):
            return float(line[len(want):])
    return None


def bpd_records(run_dir):
    recs = [json.loads(l) for l in open(os.path.join(run_dir, "log.jsonl"))]
    return [r for r in recs if r.get("event") == "bpd"]


def run(a):
    work = a.workdir
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    t_start = time.time()
    gw_port, prom_port, clf_port = free_port(), free_port(), free_port()
    # Debian's default --persistence.file is /var/lib/prometheus/pushgateway.data: keep ours in work/.
    Proc("pushgateway", ["prometheus-pushgateway", "--web.listen-address=127.0.0.1:%d" % gw_port,
                         "--persistence.file=" + os.path.join(work, "pushgateway.data")], work)
    data, labelled = write_dataset(work, a.prepare)
    extractor = write_extractor(work)
    wait_for("pushgateway", lambda: get("http://127.0.0.1:%d/-/ready" % gw_port) is not None, 20)

    # 1. The 2-rank run; rank 0 prints "metrics: http://127.0.0.1:PORT/metrics".
    run_dir = os.path.join(work, RUN_ID)
    mpirun = [a.mpiexec, "-np", "2", "--oversubscribe"]
    train = Proc("train_2ranks", mpirun + train_args(a, data, run_dir, extractor, work, 100000, gw_port,
                                                     "127.0.0.1:0"), work)
    url = wait_for("the metrics line of rank 0", lambda: next(
        (l.split("metrics: ", 1)[1].strip() for l in train.lines if l.startswith("metrics: http")), None), 60, train)
    target = url[len("http://"):].split("/")[0]
    print("training run serves %s (%.1f s after start)" % (url, time.time() - t_start))
    config = os.path.join(work, "prometheus.yml")
    # Also the classifier run of step 6 on a port chosen now (down until then).
    prometheus_config(a.prometheus_config, config, [target, "127.0.0.1:%d" % clf_port])
    Proc("prometheus", ["prometheus", "--config.file=" + config, "--storage.tsdb.path=" + os.path.join(work, "tsdb"),
                        "--web.listen-address=127.0.0.1:%d" % prom_port], work)
    prom = "http://127.0.0.1:%d" % prom_port
    wait_for("prometheus ready", lambda: get(prom + "/-/ready") is not None, 30)

    text = get(url)
    chk = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    print("promtool check metrics: rc %d %s" % (chk.returncode, (chk.stdout + chk.stderr).strip()))
    assert chk.returncode == 0, "promtool rejected our metrics:\n" + chk.stdout + chk.stderr

    exprs = dashboard_exprs(a.dashboard)
    assert len(exprs) >= 10, "dashboard has only %d queries" % len(exprs)
    task_exprs = [(t, e) for t, e in exprs if is_task_term(e)]
    assert len(task_exprs) == 2, "dashboard has %d ddpm_task_term queries, expected 2" % len(task_exprs)
    check_dashboard(prom, [(t, e) for t, e in exprs if not is_task_term(e)], time.time() + a.query_seconds)
    assert not any(query(prom, e) for _, e in task_exprs), "a diffusion run exported ddpm_task_term"
    check_values(prom, extractor)
    assert train.p.poll() is None, "the training run ended before the checks (raise --max-steps)"
    print("all %d dashboard queries but the task terms' have data (%.1f s after start)" %
          (len(exprs) - len(task_exprs), time.time() - t_start))

    # 2. Stop (SIGUSR1 through mpirun, as a scheduler's pre-emption warning): exit 75, pushed.
    os.kill(train.p.pid, signal.SIGUSR1)
    rc = train.wait(timeout=60)
    assert rc == 75, "stopped run exited with %d, expected 75:\n%s" % (rc, train.text()[-3000:])
    status = gateway_value(gw_port, "ddpm_exit_status", RUN_ID)
    print("gateway after the stop: ddpm_exit_status %s" % status)
    assert status == 75, "the stopped run's final push is not at the gateway (ddpm_exit_status %s)" % status
    stopped = [l for l in train.lines if l.startswith("stopped at step ")]
    assert stopped, "no 'stopped at step' line:\n" + train.text()[-2000:]
    step = int(stopped[-1].split()[3])

    # 3. The requeued run on 1 rank: two more steps, exit 0, the final bits/dim pushed, equal to
    #    ddpm_eval's on the final checkpoint (same EMA, images, noise seed and batch).
    again = Proc("train_requeued", train_args(a, data, run_dir, extractor, work, step + 2, gw_port, "none"), work)
    rc = again.wait(timeout=90)
    assert rc == 0, "requeued run exited with %d:\n%s" % (rc, again.text()[-3000:])
    status = gateway_value(gw_port, "ddpm_exit_status", RUN_ID)
    steps = gateway_value(gw_port, "ddpm_steps_total", RUN_ID)
    gw_text = get("http://127.0.0.1:%d/metrics" % gw_port)
    bpd_lines = [l for l in gw_text.splitlines() if l.startswith("ddpm_bpd{") and RUN_ID + '"' in l]
    print("gateway after the requeued run: ddpm_exit_status %s, ddpm_steps_total %s, %s" % (status, steps, bpd_lines))
    assert status == 0 and steps == 2, "requeued run's final push: status %s, steps %s" % (status, steps)
    assert len(bpd_lines) == 1, bpd_lines
    fid_lines = [l for l in gw_text.splitlines() if l.startswith("ddpm_fid{") and RUN_ID + '"' in l]
    assert len(fid_lines) == 1 and 'extractor="torchscript:features.pt"' in fid_lines[0], fid_lines
    pushed_bpd = float(bpd_lines[0].rsplit(" ", 1)[1])
    last = bpd_records(run_dir)[-1]
    assert last["step"] == step + 2, last
    out_json = os.path.join(work, "eval.json")
    run_quiet([a.eval, "--checkpoint", run_dir, "--data", data, "--num-samples", str(BPD_SAMPLES),
               "--batch-size", "16", "--seed", "1234", "--out-json", out_json], 120)
    summary = json.load(open(out_json))
    assert summary["count"] == BPD_SAMPLES and summary["weights"] == "ema_0.99", summary
    eval_bpd = summary["total_bpd"]
    diff = abs(pushed_bpd - eval_bpd)
    print("[maxdiff] bits/dim at step %d: pushed %.9f, log %.9f, ddpm_eval %.9f, |diff| %.3g (tol 1e-6 rel)" %
          (step + 2, pushed_bpd, last["bpd"], eval_bpd, diff))
    assert abs(pushed_bpd - last["bpd"]) <= 1e-12 * abs(eval_bpd) + 1e-12
    assert diff <= 1e-6 * abs(eval_bpd), "training-time bits/dim differs from ddpm_eval's"

    # 4. A run that fails at start (3-channel model, 1-channel data) still pushes its status.
    fail_id = RUN_ID + "-fail"
    args = train_args(a, data, os.path.join(work, fail_id), extractor, work, 4, gw_port, "none")
    args[args.index("--model-overrides") + 1] = '{"in_channels":3,"out_channels":3}'
    failed = Proc("train_fails", args, work)
    rc = failed.wait(timeout=60)
    status = gateway_value(gw_port, "ddpm_exit_status", fail_id)
    print("run that fails at start: exit %d, gateway ddpm_exit_status %s" % (rc, status))
    assert rc == 1 and "channels" in failed.text(), failed.text()[-2000:]
    assert status == 1, "the failed run's final push is not at the gateway"

    # 6. The task-term panel on a classifier run scraped by the same prometheus.
    clf_id = RUN_ID + "-clf"
    clf_dir = os.path.join(work, clf_id)
    clf = Proc("train_classifier", classifier_args(a, labelled, clf_dir, "127.0.0.1:%d" % clf_port), work)
    check_dashboard(prom, task_exprs, time.time() + a.query_seconds, clf_id)
    got = task_term_values(prom, task_exprs, clf_id)
    assert clf.p.poll() is None, "the classifier run ended before the checks:\n" + clf.text()[-2000:]
    os.killpg(clf.p.pid, signal.SIGTERM)
    rc = clf.wait(timeout=60)
    assert rc == 75, "stopped classifier run exited with %d, expected 75:\n%s" % (rc, clf.text()[-3000:])
    check_task_terms(got, clf_dir)
    print("integration: OK (%d dashboard queries with data: %d from the diffusion run, %d from the classifier "
          "run, %.1f s)" % (len(exprs), len(exprs) - len(task_exprs), len(task_exprs), time.time() - t_start))


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", required=True)
    ap.add_argument("--prepare", required=True)
    ap.add_argument("--eval", required=True)
    ap.add_argument("--mpiexec", required=True)
    ap.add_argument("--dashboard", required=True)
    ap.add_argument("--prometheus-config", required=True, help="monitoring/prometheus/prometheus.yml")
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--query-seconds", type=float, default=45, help="how long the dashboard queries may take")
    ARGS = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # ctest timeout: still clean up
    try:
        run(ARGS)
    finally:
        for p in reversed(procs):
            p.stop()
        for p in procs:
            print("stopped %s (rc %s)" % (p.name, p.p.returncode))


if __name__ == "__main__":
    main()
