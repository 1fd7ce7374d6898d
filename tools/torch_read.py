#!/usr/bin/env python3
"""What SGLang does today on the read side (its issue #35291): dequantize a layer's whole fp8
pool with `.to(torch.bfloat16)` (and the same times a per-tensor scale), and what a PyTorch
user writes for a gather of the live rows (`pool[rows].to(bf16) * scale`). Times each as the
benchmark times kvcast (CUDA events, medians of 12 samples, graph replay, hot L2 and a 4x-L2
sweep before each sample for cold), for the benchmark's pool rows, one JSON object a row.

    python3 tools/torch_read.py > torch_read.jsonl
"""
import json
import statistics
import sys

import torch

POOL_ROWS, DIM, PAGE = 1 << 20, 576, 64


def time_graph(fn, calls, cold, samples=12):
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    sweep = torch.empty(4 * torch.cuda.get_device_properties(0).L2_cache_size // 4, device="cuda", dtype=torch.int32)
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for i in range(samples + 3):
        if cold:
            sweep.sum()
        start.record()
        graph.replay()
        stop.record()
        stop.synchronize()
        if i >= 3:
            times.append(start.elapsed_time(stop) * 1e3 / calls)
    return statistics.median(times)


def main():
    torch.manual_seed(0)
    dev = torch.device("cuda")
    pool = torch.randint(0, 255, (POOL_ROWS, 1, DIM), device=dev, dtype=torch.uint8).view(torch.float8_e4m3fn)
    scale = torch.tensor(0.0173, device=dev)
    out = torch.empty(POOL_ROWS, 1, DIM, device=dev, dtype=torch.bfloat16)
    pages = torch.randperm(POOL_ROWS // PAGE, device=dev)
    for cold in (True, False):
        cache = "cold" if cold else "hot"
        rows = [("pool_all", lambda: out.copy_(pool.to(torch.bfloat16)), 2),
                ("pool_all_scaled", lambda: out.copy_((pool.to(torch.float32) * scale).to(torch.bfloat16)), 2)]
        for percent in (1, 5, 20):
            live = POOL_ROWS * percent // 100 // 4096 * 4096
            n_pages = live // PAGE
            idx = (pages[:n_pages, None] * PAGE + torch.arange(PAGE, device=dev)).reshape(-1)
            dst = torch.empty(live, 1, DIM, device=dev, dtype=torch.bfloat16)
            rows.append((f"pool_live{percent}_gather", lambda idx=idx, dst=dst: dst.copy_((pool[idx].to(torch.float32) * scale)
                                                                                         .to(torch.bfloat16)), 8))
        for name, fn, calls in rows:
            us = time_graph(fn, calls, cold)
            row = {"name": name if cold else name + "_hot", "cache": cache, "us": us}
            print(json.dumps(row), flush=True)
    print(json.dumps({"gpu": torch.cuda.get_device_name(), "torch": torch.__version__}), file=sys.stderr)


if __name__ == "__main__":
    main()
