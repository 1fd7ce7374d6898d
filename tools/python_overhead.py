#!/usr/bin/env python3
"""Host cost of one call through kvcast's Python face, beside the C++ call's: the same problem
as the C++ benchmark's host/downcast_launch row (16 x 8 x 128 bf16, E4M3, SGLang's drop-in),
timed the same way: the time to issue a batch of calls back to back, the stream drained
between batches and outside the timing, so that the GPU's own pace never enters. The paths
take turns batch by batch, so they share the machine's state. Prints one line per path in
microseconds per call (median over the batches), beside the C++ call itself timed inside the
module in the same batches (kvcast._LIB._issue_seconds_downcast_fp8), and the Python path's
excess over it batch by batch. Two more rows split that excess: the binding's whole C++ side
called in a C++ loop (tensors read, checked, planned, launched), and tvm-ffi's own floor, its
`testing.nop` given the drop-in's nine arguments (the Python call and the tensors' conversion).

    python3 tools/python_overhead.py [--batches N] [--cpu K]
--cpu K pins the process to CPU K first (-1, the default: the lowest CPU it may run on; -2: no
pinning), so that the paths are not timed across migrations between cores.
Compare with `kvcast_bench --benchmark_filter='^host/'` from the same machine and run."""
import argparse
import os
import statistics
import time

import torch

import kvcast

BATCH = 256  # calls issued back to back: well inside the launch queue, so issuing never waits
DROP_IN = "kvcast.downcast_fp8 (tvm-ffi)"
NOP = "tvm-ffi testing.nop, the drop-in's 9 arguments"


def issue_us(fn):
    """Microseconds a call to issue BATCH calls of fn, the queue drained before and after."""
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(BATCH):
        fn()
    elapsed = time.perf_counter() - start
    torch.cuda.synchronize()
    return elapsed / BATCH * 1e6


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=400)
    parser.add_argument("--cpu", type=int, default=-1)
    args = parser.parse_args()
    batches = args.batches
    pinned = "not pinned"
    if args.cpu != -2 and hasattr(os, "sched_setaffinity"):
        cpu = args.cpu if args.cpu >= 0 else min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        pinned = f"pinned to CPU {cpu}"
    print(f"host: {os.cpu_count()} CPUs, {pinned}")
    dev = "cuda"
    k = torch.randn(16, 8, 128, dtype=torch.bfloat16, device=dev)
    v = torch.randn(16, 8, 128, dtype=torch.bfloat16, device=dev)
    k_out = torch.zeros(64, 8, 128, dtype=torch.uint8, device=dev)
    v_out = torch.zeros(64, 8, 128, dtype=torch.uint8, device=dev)
    scale = torch.ones(1, device=dev)
    loc = torch.arange(16, device=dev)
    one = torch.empty(1, device=dev)
    def cxx():  # the C++ call (kvcast::downcast) BATCH times, timed inside the module
        return kvcast._LIB._issue_seconds_downcast_fp8(k, v, k_out, v_out, scale, scale, loc, BATCH, False)

    def binding():  # the whole binding (tensors read, checked, planned) BATCH times, in C++
        return kvcast._LIB._issue_seconds_downcast_fp8(k, v, k_out, v_out, scale, scale, loc, BATCH, True)

    paths = {
        DROP_IN: lambda: kvcast.downcast_fp8(k, v, k_out, v_out, scale, scale, loc),
        "torch.ops.kvcast.downcast_fp8": lambda: torch.ops.kvcast.downcast_fp8(k, v, k_out, v_out, scale, scale, loc),
        "kvcast.write (keywords)": lambda: kvcast.write(k, v, k_out, v_out, loc=loc, k_scale=scale, v_scale=scale),
        "kvcast._LIB.downcast_fp8 (no Python wrapper)": lambda: kvcast._LIB.downcast_fp8(k, v, k_out, v_out, scale, scale, loc, 1, 0),
        "torch one.zero_() (a torch launch)": lambda: one.zero_(),
    }
    try:  # tvm-ffi's own floor: a function that does nothing, given the drop-in's arguments
        import tvm_ffi.testing
        nop = tvm_ffi.get_global_func("testing.nop")
        paths[NOP] = lambda: nop(k, v, k_out, v_out, scale, scale, loc, 1, 0)
        paths["tvm-ffi testing.nop, no arguments"] = lambda: nop()
    except Exception as e:  # noqa: BLE001 - the floor is optional
        print(f"tvm-ffi's testing.nop unavailable ({e}); no floor")
    times = {name: [] for name in paths}
    cxx_us, binding_us, gap_us, own_us = [], [], [], []
    for fn in paths.values():  # warm up: first calls load and build
        issue_us(fn)
    for _ in range(batches):
        torch.cuda.synchronize()
        cxx_us.append(cxx() / BATCH * 1e6)
        torch.cuda.synchronize()
        binding_us.append(binding() / BATCH * 1e6)
        torch.cuda.synchronize()
        for name, fn in paths.items():
            times[name].append(issue_us(fn))
        gap_us.append(times[DROP_IN][-1] - cxx_us[-1])
        if NOP in times:  # what kvcast adds beyond tvm-ffi's conversion and the C++ call
            own_us.append(gap_us[-1] - times[NOP][-1])
    print(f"gpu: {torch.cuda.get_device_name()}, torch {torch.__version__}, kvcast {kvcast.__version__}, "
          f"{batches} batches of {BATCH} calls a path")
    print(f"c++/kvcast::downcast (same process): {statistics.median(cxx_us):.2f} us/call")
    print(f"c++/the binding's downcast_fp8, called in a C++ loop: {statistics.median(binding_us):.2f} us/call")
    for name, t in times.items():
        print(f"python/{name}: {statistics.median(t):.2f} us/call")
    gap_us.sort()
    print(f"python/kvcast.downcast_fp8 - c++, batch by batch: median {statistics.median(gap_us):.2f} us, "
          f"quartiles {gap_us[len(gap_us) // 4]:.2f} .. {gap_us[3 * len(gap_us) // 4]:.2f} us")
    if own_us:
        own_us.sort()
        print(f"python/kvcast.downcast_fp8 - c++ - testing.nop(9 arguments), batch by batch: median "
              f"{statistics.median(own_us):.2f} us, quartiles {own_us[len(own_us) // 4]:.2f} .. "
              f"{own_us[3 * len(own_us) // 4]:.2f} us")


if __name__ == "__main__":
    main()
