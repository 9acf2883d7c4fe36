#!/usr/bin/env python3
"""diffuse against PyTorch on the same U-Net, both measured in one run of this script.

    /usr/bin/python3 benchmarks/compare_pytorch.py [--build build/release] [--repeats 5] [--threads 2]

Runs build/<preset>/benchmarks/diffuse_unet_bench (the U-Net's forward at batch 1 and 16, one DDPM
sampling step at batch 16, one training step at batch 64; the median of --repeats repetitions), then
benchmarks/pytorch_reference.py twice: as installed, and tuned (jemalloc preloaded when Debian's
libjemalloc2 is installed; PyTorch's BLAS is whatever Debian's libblas.so.3 alternative selects,
OpenBLAS once libopenblas0-pthread is installed). Prints a Markdown table with the ratios
(PyTorch time / diffuse time: above 1, diffuse is faster), the last against whichever PyTorch was
faster on that row (jemalloc is not faster everywhere: seen 3x slower for the training step).

Optional, like pytorch_reference.py: without PyTorch it says so and exits 0.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
BLAS_ALTERNATIVE = "/etc/alternatives/libblas.so.3-x86_64-linux-gnu"


def diffuse_times(binary, repeats, threads):
    env = dict(os.environ, DIFFUSE_NUM_THREADS=str(threads))
    out = subprocess.run(
        [binary, "--benchmark_filter=BM_unet_forward|BM_ddpm_step|BM_train_step",
         f"--benchmark_repetitions={repeats}", "--benchmark_format=json"],
        env=env, check=True, capture_output=True, text=True).stdout
    runs = {}
    for b in json.loads(out)["benchmarks"]:
        if b.get("run_type") != "iteration":
            continue
        assert b["time_unit"] == "ms", b["time_unit"]
        name = b["run_name"]
        key = ("forward batch 1" if "forward/batch:1/" in name else
               "forward batch 16" if "forward/batch:16/" in name else
               "sampling step batch 16" if "ddpm_step" in name else
               "training step batch 64")
        runs.setdefault(key, []).append(b["real_time"])
    times = {key: statistics.median(values) for key, values in runs.items()}
    return times


def pytorch_times(repeats, threads, env):
    out = subprocess.run([sys.executable, os.path.join(HERE, "pytorch_reference.py"),
                          "--repeats", str(repeats), "--threads", str(threads)],
                         env=env, check=True, capture_output=True, text=True).stdout
    times = {m.group(1): float(m.group(2)) for m in re.finditer(r"^(.*): ([0-9.]+) ms$", out, re.M)}
    return times, out.splitlines()[0] if out else ""


def processor_name():
    """The processor's model name, family and model, and its widest vector instruction set (speed
    figures say which processor they came from; a VM's model name can be as terse as "AMD EPYC")."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        return "unknown"
    flags = fields.get("flags", "").split()
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "SSE2"
    if "amx_tile" in flags:
        isa += " + AMX"
    return (f"{fields.get('model name', 'unknown')} (family {fields.get('cpu family', '?')}, "
            f"model {fields.get('model', '?')}), {isa}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", default=os.path.join(HERE, "..", "build", "release"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    try:
        import torch  # noqa: F401
    except ImportError:
        print("compare_pytorch.py: PyTorch is not installed (apt-get install python3-torch); skipped")
        return 0
    binary = os.path.join(args.build, "benchmarks", "diffuse_unet_bench")
    if not os.path.exists(binary):
        print(f"compare_pytorch.py: {binary} not found; build it first "
              "(cmake --preset release && cmake --build --preset release --target diffuse_unet_bench)")
        return 1

    ours = diffuse_times(binary, args.repeats, args.threads)
    installed, banner = pytorch_times(args.repeats, args.threads, dict(os.environ))
    tuned_env = dict(os.environ)
    if os.path.exists(JEMALLOC):
        tuned_env["LD_PRELOAD"] = JEMALLOC
    tuned, _ = pytorch_times(args.repeats, args.threads, tuned_env)
    blas = os.path.realpath(BLAS_ALTERNATIVE) if os.path.exists(BLAS_ALTERNATIVE) else "unknown"

    print(f"{banner}; BLAS: {blas}; tuned = {'jemalloc preloaded' if os.path.exists(JEMALLOC) else 'as installed (no jemalloc)'}")
    print(f"processor: {processor_name()}; {args.threads} threads, medians of {args.repeats}\n")
    print("| | diffuse | PyTorch as installed | PyTorch tuned | ratio (installed) | ratio (tuned) | ratio (the faster PyTorch) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for key in ("forward batch 1", "forward batch 16", "sampling step batch 16", "training step batch 64"):
        d = ours.get(key)
        # PyTorch's sampling step is its forward at batch 16 (the posterior update is negligible)
        pkey = "forward batch 16" if key == "sampling step batch 16" else key
        i, t = installed.get(pkey), tuned.get(pkey)
        if d is None or i is None or t is None:
            continue
        print(f"| {key} | {d:.1f} ms | {i:.1f} ms | {t:.1f} ms | {i / d:.2f}x | {t / d:.2f}x | {min(i, t) / d:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
