#!/usr/bin/env python3
"""Integration test of ddpm's monitoring with real servers on 127.0.0.1 (label cpu).

Starts Debian's prometheus-pushgateway and ddpm_metrics_demo (metrics on a free port, pushing to
the gateway), then prometheus scraping the demo every second. Checks: `promtool check metrics`
accepts the endpoint's output; every PromQL expression of monitoring/grafana/ddpm.json (with
$run_id and $__rate_interval substituted) returns data through /api/v1/query; the final push
with ddpm_exit_status reaches the gateway. Every wait is bounded; servers are stopped on any exit.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

RUN_ID = "itest-%d" % os.getpid()
procs = []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(name, args, workdir):
    log = open(os.path.join(workdir, name + ".log"), "w")
    p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    procs.append((name, p))
    return p


def stop_all():
    for name, p in reversed(procs):
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)


def get(url, timeout=3):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def wait_for(what, fn, timeout):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            v = fn()
            if v:
                return v
        except (OSError, urllib.error.URLError, ValueError) as e:
            last = e
        time.sleep(0.5)
    raise TimeoutError("timed out after %ss waiting for %s (last error: %s)" % (timeout, what, last))


def dashboard_exprs(path):
    dash = json.load(open(path))
    out = []
    for p in dash["panels"]:
        for t in p.get("targets", []):
            out.append((p["title"], t["expr"]))
    return out


def run(args):
    work = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    gw_port, prom_port = free_port(), free_port()
    # Debian's default --persistence.file is /var/lib/prometheus/pushgateway.data: keep ours in work/.
    start("pushgateway", ["prometheus-pushgateway", "--web.listen-address=127.0.0.1:%d" % gw_port,
                          "--persistence.file=" + os.path.join(work, "pushgateway.data")], work)
    wait_for("pushgateway", lambda: get("http://127.0.0.1:%d/-/ready" % gw_port) is not None, 20)

    port_file = os.path.join(work, "demo.port")
    demo = start("demo", [args.demo, "--metrics-addr", "127.0.0.1:0", "--pushgateway", "127.0.0.1:%d" % gw_port,
                          "--run-id", RUN_ID, "--seconds", str(args.seconds), "--push-interval", "1",
                          "--world-size", "2", "--port-file", port_file], work)
    demo_port = int(wait_for("demo port file", lambda: open(port_file).read().strip(), 20))
    metrics_url = "http://127.0.0.1:%d/metrics" % demo_port

    config = os.path.join(work, "prometheus.yml")
    with open(config, "w") as f:
        f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n"
                "  - job_name: ddpm\n    static_configs:\n      - targets: ['127.0.0.1:%d']\n" % demo_port)
    start("prometheus", ["prometheus", "--config.file=" + config, "--storage.tsdb.path=" + os.path.join(work, "tsdb"),
                         "--web.listen-address=127.0.0.1:%d" % prom_port], work)
    prom = "http://127.0.0.1:%d" % prom_port
    wait_for("prometheus ready", lambda: get(prom + "/-/ready") is not None, 30)

    # 1. promtool accepts the exposition (lint: naming, units, types).
    text = get(metrics_url)
    chk = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    print("promtool check metrics: rc %d %s" % (chk.returncode, (chk.stdout + chk.stderr).strip()))
    assert chk.returncode == 0, "promtool rejected our metrics:\n" + chk.stdout + chk.stderr

    # 2. Every dashboard query returns data.
    exprs = dashboard_exprs(args.dashboard)
    assert len(exprs) >= 10, "dashboard has only %d queries" % len(exprs)

    def query(expr):
        e = expr.replace("$run_id", RUN_ID).replace("$__rate_interval", "30s")
        assert "$" not in e, "unsubstituted variable in " + e
        r = json.loads(get(prom + "/api/v1/query?" + urllib.parse.urlencode({"query": e})))
        assert r["status"] == "success", r
        return r["data"]["result"]

    pending = list(exprs)
    deadline = time.time() + args.seconds + 20
    while pending and time.time() < deadline:
        pending = [(t, e) for t, e in pending if not query(e)]
        if pending:
            time.sleep(1)
    for t, e in exprs:
        n = len(query(e))
        print("query %-32s %2d series  %s" % (t[:32], n, e))
    assert not pending, "dashboard queries without data: %s" % pending

    # 3. The final push reaches the gateway, grouped by job and run_id, with the exit status.
    rc = demo.wait(timeout=args.seconds + 30)
    assert rc == 0, "ddpm_metrics_demo exited with %d (see %s/demo.log)" % (rc, work)
    gw = get("http://127.0.0.1:%d/metrics" % gw_port)
    want = 'ddpm_exit_status{instance="",job="ddpm_metrics_demo",run_id="%s"} 0' % RUN_ID
    lines = [l for l in gw.splitlines() if l.startswith("ddpm_exit_status")]
    print("gateway:", lines)
    assert want in gw, "final push not at the gateway: expected %s" % want
    assert len(lines) == 1, "the gateway holds other groups: %s" % lines
    assert any(l.startswith("ddpm_steps_total{") and RUN_ID in l for l in gw.splitlines())
    print("integration: OK (%d dashboard queries with data)" % len(exprs))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--demo", required=True)
    ap.add_argument("--dashboard", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--seconds", type=float, default=12)
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # ctest timeout: still clean up
    try:
        run(args)
    finally:
        stop_all()
        for name, p in procs:
            print("stopped %s (rc %s)" % (name, p.returncode))


if __name__ == "__main__":
    main()
