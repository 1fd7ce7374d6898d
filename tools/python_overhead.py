#!/usr/bin/env python3
"""Host cost of one call through kvcast's Python face, beside the C++ call's: the same problem
as the C++ benchmark's host/downcast_launch row (16 x 8 x 128 bf16, E4M3, SGLang's drop-in),
timed the same way (calls back to back, the stream synchronized every 512 so the launch queue
never fills). Prints one line per path in microseconds per call (median of 7 runs).

    python3 tools/python_overhead.py [--calls N]
Compare with `kvcast_bench --benchmark_filter='^host/'` from the same machine and run."""
import argparse
import statistics
import time

import torch

import kvcast


def per_call_us(fn, calls):
    fn()
    torch.cuda.synchronize()
    runs = []
    for _ in range(7):
        start = time.perf_counter()
        for i in range(calls):
            fn()
            if i % 512 == 511:
                torch.cuda.synchronize()
        torch.cuda.synchronize()
        runs.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(runs)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20000)
    calls = parser.parse_args().calls
    dev = "cuda"
    k = torch.randn(16, 8, 128, dtype=torch.bfloat16, device=dev)
    v = torch.randn(16, 8, 128, dtype=torch.bfloat16, device=dev)
    k_out = torch.zeros(64, 8, 128, dtype=torch.uint8, device=dev)
    v_out = torch.zeros(64, 8, 128, dtype=torch.uint8, device=dev)
    scale = torch.ones(1, device=dev)
    loc = torch.arange(16, device=dev)
    one = torch.empty(1, device=dev)
    paths = {
        "kvcast.downcast_fp8 (tvm-ffi)": lambda: kvcast.downcast_fp8(k, v, k_out, v_out, scale, scale, loc),
        "torch.ops.kvcast.downcast_fp8": lambda: torch.ops.kvcast.downcast_fp8(k, v, k_out, v_out, scale, scale, loc),
        "kvcast.write (keywords)": lambda: kvcast.write(k, v, k_out, v_out, loc=loc, k_scale=scale, v_scale=scale),
        "torch one.zero_() (a torch launch)": lambda: one.zero_(),
    }
    print(f"gpu: {torch.cuda.get_device_name()}, torch {torch.__version__}, kvcast {kvcast.__version__}, {calls} calls x 7")
    for name, fn in paths.items():
        print(f"python/{name}: {per_call_us(fn, calls):.2f} us/call")


if __name__ == "__main__":
    main()
