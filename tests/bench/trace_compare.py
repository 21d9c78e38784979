"""Op-by-op comparison of two torch profiler Chrome traces (the C++ step's and the eager step's,
from vs_eager.py --profile): the self time of every CPU op (its duration less that of the ops it
called, per thread) and, on a GPU, of every kernel, summed by name and divided by the steps.
"""
import collections
import json


def self_times(path, steps):
    """{(kind, name): [microseconds per step, calls per step]}; kind is 'cpu' or 'gpu'."""
    with open(path) as f:
        events = json.load(f)["traceEvents"]
    out = collections.defaultdict(lambda: [0.0, 0.0])
    by_thread = collections.defaultdict(list)
    for e in events:
        if e.get("ph") != "X":
            continue
        cat = e.get("cat", "")
        if cat == "kernel":
            slot = out[("gpu", e["name"])]
            slot[0] += e["dur"] / steps
            slot[1] += 1 / steps
        elif cat == "cpu_op":
            by_thread[(e.get("pid"), e.get("tid"))].append((float(e["ts"]), float(e["dur"]), e["name"]))
    for evs in by_thread.values():
        evs.sort(key=lambda v: (v[0], -v[1]))
        stack = []  # [end, name, self]
        def pop():
            end, name, own = stack.pop()
            slot = out[("cpu", name)]
            slot[0] += own / steps
            slot[1] += 1 / steps
        for ts, dur, name in evs:
            while stack and stack[-1][0] <= ts:
                pop()
            if stack:
                stack[-1][2] -= dur
            stack.append([ts + dur, name, dur])
        while stack:
            pop()
    return out


def print_comparison(cpp_path, eager_path, steps, top=25):
    cpp, eager = self_times(cpp_path, steps), self_times(eager_path, steps)
    for kind, title in (("cpu", "CPU ops"), ("gpu", "GPU kernels")):
        names = {n for k, n in cpp if k == kind} | {n for k, n in eager if k == kind}
        if not names:
            continue
        rows = [(n, cpp.get((kind, n), [0.0, 0.0]), eager.get((kind, n), [0.0, 0.0])) for n in names]
        total_c, total_e = sum(c[0] for _, c, _ in rows), sum(e[0] for _, _, e in rows)
        print(f"{title}, self time per step (ms) and calls per step: C++ {total_c / 1e3:.2f} ms, eager "
              f"{total_e / 1e3:.2f} ms; the {top} largest differences")
        print(f"  {'C++ ms':>9} {'calls':>6} {'eager ms':>9} {'calls':>6}  name")
        rows.sort(key=lambda r: -abs(r[1][0] - r[2][0]))
        for name, c, e in rows[:top]:
            print(f"  {c[0] / 1e3:9.3f} {c[1]:6.0f} {e[0] / 1e3:9.3f} {e[1]:6.0f}  {name[:90]}")
