#!/usr/bin/env python3
"""Side-by-side benchmark: ddpm's C++ training step (build/bin/ddpm_bench_step) against the same
step in PyTorch eager (eager_step.py on tests/reference/unet_reference.py), in one run on one
machine, with the same weights, batch, dtype and thread count. See tests/bench/README.md.

For each preset: the C++ side starts, writes the weights and the check step's inputs; the eager
side loads them; both take the check step (eval mode, same t and noise) and the losses before and
after it (loss1, loss2) and the gradient norm must agree within the stated tolerance (the worst
relative difference is printed; exit status 1 when it does not hold). Then warm-up steps, then
--rounds rounds of --steps timed steps on each side, alternating which side goes first; img/s is
batch * steps / the median round time. On CUDA also the MFU: training FLOP per image counted by
torch.utils.flop_counter on the eager forward + backward (the C++ U-Net's analytic 3x forward
count is printed beside it) over the device's dense bf16 peak (--peak-tflops or a table).

  tests/bench/vs_eager.sh                                    # CPU: tiny, fmnist-small
  tests/bench/vs_eager.sh --device cuda --precision bf16 --batch 128
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from eager_step import EagerStep  # noqa: E402
from trace_compare import print_comparison  # noqa: E402

CPU_PRESETS = ["tiny", "fmnist-small"]
GPU_PRESETS = ["tiny", "fmnist-small", "ddpm-cifar10", "improved-cifar10"]
CPU_BATCH = {"tiny": 32, "fmnist-small": 32, "ddpm-cifar10": 4, "improved-cifar10": 4}
# Dense bf16 peak (TFLOP/s, no sparsity) by device-name substring, first match wins.
PEAK_BF16 = [("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("A100", 312.0)]
# Relative tolerance of the check step: fp32 differs by summation order only; bf16 autocast
# rounds activations to 8 bits of mantissa.
TOLERANCE = {"fp32": 1e-5, "bf16": 3e-2}


class CppStep:
    """ddpm_bench_step as a child process: one command line in, one JSON line out."""

    def __init__(self, binary, args):
        self.proc = subprocess.Popen([binary, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.info = self._read()

    def _read(self):
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"vs_eager: ddpm_bench_step ended (exit {self.proc.wait()}); see its error above")
        reply = json.loads(line)
        if "error" in reply:
            raise SystemExit(f"vs_eager: ddpm_bench_step: {reply['error']}")
        return reply

    def ask(self, command):
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=60)


def peak_tflops(args, device):
    if args.peak_tflops:
        return args.peak_tflops
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_BF16:
        if key in name:
            return value
    print(f"vs_eager: no dense bf16 peak known for '{name}'; pass --peak-tflops to get the MFU", file=sys.stderr)
    return None


def compare(cpp, eager, tol):
    """Worst relative difference over loss1, loss2, grad_norm; lr must be the same."""
    worst, which = 0.0, ""
    for key in ("loss1", "loss2", "grad_norm"):
        a, b = cpp[key], eager[key]
        rel = abs(a - b) / max(abs(b), 1e-12)
        if not rel <= worst:  # NaN counts as the worst
            worst, which = rel, key
    ok = worst <= tol and abs(cpp["lr"] - eager["lr"]) <= 1e-12 * max(abs(eager["lr"]), 1.0)
    return ok, worst, which


def bench(preset, args, device, folder):
    batch = args.batch or (128 if device.type == "cuda" else CPU_BATCH[preset])
    cpp_args = ["--preset", preset, "--batch", str(batch), "--device", args.device, "--precision", args.precision,
                "--threads", str(args.threads), "--seed", str(args.seed), "--dir", folder, "--malloc", args.malloc,
                "--comm", args.cpp_comm]
    for kv in args.set:
        cpp_args += ["--set", kv]
    cpp = CppStep(args.binary, cpp_args)
    try:
        eager = EagerStep(folder, device, ddp=not args.no_ddp)
        if args.perturb_eager:  # a test of the check itself: the eager network differs slightly
            with torch.no_grad():
                eager.params[0].add_(args.perturb_eager)
        c, e = cpp.ask("check"), eager.check()
        tol = TOLERANCE[args.precision]
        ok, worst, which = compare(c, e, tol)
        print(f"[check] {preset}: C++ loss1 {c['loss1']:.7g} loss2 {c['loss2']:.7g} grad_norm {c['grad_norm']:.7g} | "
              f"eager loss1 {e['loss1']:.7g} loss2 {e['loss2']:.7g} grad_norm {e['grad_norm']:.7g} | worst rel diff "
              f"{worst:.3g} ({which}), tolerance {tol:g}: {'ok' if ok else 'FAILED'}", flush=True)
        row = dict(preset=preset, batch=batch, params=cpp.info["params"], size=json.load(
            open(os.path.join(folder, "config.json")))["image_size"], check_ok=ok, check_worst=worst,
            loss_type=cpp.info["loss_type"], var_type=cpp.info["var_type"], comm=cpp.info["comm"])
        if args.check_only:
            return row
        if args.profile:
            cpp.ask(f"time {args.warmup}")
            eager.time(args.warmup)
            os.makedirs(args.profile_dir or folder, exist_ok=True)
            traces = os.path.join(args.profile_dir or folder, f"{preset}_cpp.json"), \
                os.path.join(args.profile_dir or folder, f"{preset}_eager.json")
            cpp.ask(f"profile {args.profile} {traces[0]}")
            eager.profile(args.profile, traces[1])
            print(f"[profile] {preset}, batch {batch}, {args.profile} steps per side (traces: {traces[0]}, {traces[1]})")
            print_comparison(*traces, args.profile)
        row["flop_analytic"] = 3 * cpp.info["fwd_flop_per_image"]
        row["flop_counted"] = eager.train_flop_per_image()
        cpp.ask(f"time {args.warmup}")
        eager.time(args.warmup)
        wall, cpu, faults = {"cpp": [], "eager": []}, {"cpp": [], "eager": []}, {"cpp": 0, "eager": 0}

        def run_cpp():
            reply = cpp.ask(f"time {args.steps}")
            return reply["seconds"], reply["cpu_seconds"], reply["minor_faults"]

        for r in range(args.rounds):
            sides = [("cpp", run_cpp), ("eager", lambda: eager.time(args.steps))]
            for name, run in sides if r % 2 == 0 else sides[::-1]:
                seconds, cpu_seconds, f = run()
                wall[name].append(seconds)
                cpu[name].append(cpu_seconds)
                faults[name] += f
        steps = args.rounds * args.steps
        med = {k: statistics.median(v) for k, v in wall.items()}
        cpu_med = {k: statistics.median(v) for k, v in cpu.items()}
        print(f"[time] {preset}: C++ all-reduce over '{cpp.info['comm']}'; median round {med['cpp']:.3f} s C++, "
              f"{med['eager']:.3f} s eager (CPU time {cpu_med['cpp']:.3f} s, {cpu_med['eager']:.3f} s: ratio "
              f"{cpu_med['eager'] / cpu_med['cpp']:.2f}); page faults per step {faults['cpp'] / steps:.0f} C++, "
              f"{faults['eager'] / steps:.0f} eager", flush=True)
        n = batch * args.steps
        row.update(cpp_ips=n / med["cpp"], eager_ips=n / med["eager"],
                   cpp_range=(n / max(wall["cpp"]), n / min(wall["cpp"])),
                   eager_range=(n / max(wall["eager"]), n / min(wall["eager"])),
                   cpu_ratio=cpu_med["eager"] / cpu_med["cpp"])
        row["ratio"] = row["cpp_ips"] / row["eager_ips"]
        return row
    finally:
        cpp.close()


def print_table(rows, args, peak):
    mfu, cpu = peak is not None, args.device == "cpu"
    head = "| preset | px | batch | params | loss | C++ img/s | eager img/s | C++ / eager |"
    head += " by CPU time |" if cpu else ""
    head += " MFU C++ / eager |" if mfu else ""
    head += " train GFLOP/img (counted; 3x fwd) | check worst rel diff |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for r in rows:
        loss = "hybrid" if r["loss_type"] == "rescaled-mse" and r["var_type"].startswith("learned") else r["loss_type"]
        line = f"| {r['preset']} | {r['size']} | {r['batch']} | {r['params']:,} | {loss} |"
        if "cpp_ips" in r:
            line += (f" {r['cpp_ips']:.1f} ({r['cpp_range'][0]:.1f}-{r['cpp_range'][1]:.1f}) |"
                     f" {r['eager_ips']:.1f} ({r['eager_range'][0]:.1f}-{r['eager_range'][1]:.1f}) | {r['ratio']:.2f}x |")
            line += f" {r['cpu_ratio']:.2f}x |" if cpu else ""
            if mfu:
                f = r["flop_counted"] / 1e12
                line += f" {100 * f * r['cpp_ips'] / peak:.1f}% / {100 * f * r['eager_ips'] / peak:.1f}% |"
            line += f" {r['flop_counted'] / 1e9:.3f}; {r['flop_analytic'] / 1e9:.3f} |"
        else:
            line += " - | - | - |" + (" - |" if cpu else "") + (" - |" if mfu else "") + " - |"
        line += f" {r['check_worst']:.2g} {'ok' if r['check_ok'] else 'FAILED'} |"
        print(line)


def main():
    root = os.path.dirname(os.path.dirname(HERE))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.environ.get("DDPM_BUILD_DIR", os.path.join(root, "build")),
                    help="build folder holding bin/ddpm_bench_step (default: $DDPM_BUILD_DIR or ./build)")
    ap.add_argument("--preset", action="append", help="tiny, fmnist-small, ddpm-cifar10, improved-cifar10 (repeat; "
                    "default: tiny and fmnist-small on the CPU, all four on CUDA)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="bf16: autocast, CUDA only")
    ap.add_argument("--batch", type=int, default=0, help=f"images per step (default: 128 on CUDA, {CPU_BATCH} on the CPU)")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                    help="intra-op CPU threads of both sides (default: the CPUs this process may use)")
    ap.add_argument("--warmup", type=int, default=0, help="untimed steps per side (default 2 on the CPU, 20 on CUDA)")
    ap.add_argument("--steps", type=int, default=0, help="timed steps per round (default 10 on the CPU, 50 on CUDA)")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds per side, alternating (default 5)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], help="TrainConfig key=value for both sides (repeat)")
    ap.add_argument("--cpp-comm", default="auto", choices=["auto", "single", "nccl", "mpi"], help="the C++ side's "
                    "communicator for the 1-rank all-reduce (auto: as ddpm_train, NCCL on a GPU, single-process on the CPU)")
    ap.add_argument("--malloc", default="retain", choices=["retain", "default"], help="the C++ side's host "
                    "allocator: retain (as ddpm_train: freed memory kept for the next step) or glibc's default")
    ap.add_argument("--no-ddp", action="store_true", help="eager without DistributedDataParallel (no all-reduce)")
    ap.add_argument("--peak-tflops", type=float, default=0.0, help="the device's dense bf16 peak for the MFU "
                    "(default: by name; H100 SXM 989, H200 989)")
    ap.add_argument("--check-only", action="store_true", help="the check step only (no timing): a test")
    ap.add_argument("--json", help="also write the rows to this JSON file")
    ap.add_argument("--perturb-eager", type=float, default=0.0, help=argparse.SUPPRESS)  # tests: the check must fail
    ap.add_argument("--profile", type=int, default=0, help="N: also profile N steps of each side after the warm-up "
                    "and print the ops whose self time differs most")
    ap.add_argument("--profile-dir", help="keep the two Chrome traces of each preset here (default: a temporary folder)")
    args = ap.parse_args()

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"vs_eager: --device {args.device}: torch.cuda.is_available() is False on this machine "
                         "(no GPU or no driver); run the GPU mode on a GPU machine, or use --device cpu")
    if args.precision == "bf16" and device.type != "cuda":
        raise SystemExit("vs_eager: --precision bf16 is a CUDA mode (autocast); use fp32 with --device cpu")
    args.binary = os.path.join(args.build, "bin", "ddpm_bench_step")
    if not os.access(args.binary, os.X_OK):
        raise SystemExit(f"vs_eager: {args.binary} not found; build it: cmake --build {args.build} --target ddpm_bench_step")
    cuda = device.type == "cuda"
    args.warmup = args.warmup or (20 if cuda else 2)
    args.steps = args.steps or (50 if cuda else 10)
    presets = args.preset or (GPU_PRESETS if cuda else CPU_PRESETS)
    torch.set_num_threads(args.threads)
    name = torch.cuda.get_device_name(device) if cuda else f"CPU, {args.threads} threads"
    print(f"vs_eager: {name}, torch {torch.__version__}, {args.precision}, eager "
          f"{'without DDP' if args.no_ddp else 'DDP (1 rank)'} + fused AdamW + foreach EMA; warm-up {args.warmup}, "
          f"{args.rounds} rounds of {args.steps} steps per side", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="vs_eager_") as tmp:
        for preset in presets:
            rows.append(bench(preset, args, device, os.path.join(tmp, preset)))
            if cuda:
                torch.cuda.empty_cache()
    print_table(rows, args, peak_tflops(args, device) if cuda and not args.check_only else None)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    if not all(r["check_ok"] for r in rows):
        raise SystemExit("vs_eager: the C++ and eager steps differ beyond the tolerance (see [check]): the "
                         "comparison is not of identical work")


if __name__ == "__main__":
    main()
