#!/usr/bin/env python3
"""What a PyTorch user runs instead of kvcast's per-(token, head) write: the issue's expression
in eager ops, then the scatter of codes and scales into the cache by slot. Times it the way the
benchmark times kvcast (CUDA events, medians of 12 samples; graph replay and eager launches,
hot L2) for the shapes of the benchmark's "scales" rows, and prints one JSON object a row.

    python3 tools/torch_scales.py > torch_scales.jsonl
"""
import json
import statistics
import sys

import torch

MAX = 448.0  # E4M3


def write(x, cache, scales, loc, min_scale=1e-6):
    a = x.float().abs().amax(-1)
    s = (a / MAX).clamp(min=min_scale)
    q = (x.float() / s[..., None]).clamp(-MAX, MAX).to(torch.float8_e4m3fn)
    cache[loc] = q
    scales[loc] = s


def step(k, v, k_cache, v_cache, k_scales, v_scales, loc):
    write(k, k_cache, k_scales, loc)
    write(v, v_cache, v_scales, loc)


def time_calls(fn, calls, samples=12):
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for i in range(samples + 3):
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        if i >= 3:
            times.append(start.elapsed_time(stop) * 1e3 / calls)  # us a call
    return statistics.median(times)


def main():
    torch.manual_seed(0)
    dev = torch.device("cuda")
    rows = []
    for tokens in (1, 4, 16, 32768, 65536):
        for heads, dim in ((8, 64), (8, 128), (8, 256), (1, 576)):
            if tokens == 65536 and dim >= 128:
                continue
            k = torch.randn(tokens, heads, dim, device=dev, dtype=torch.bfloat16) * 8
            v = torch.randn(tokens, heads, dim, device=dev, dtype=torch.bfloat16) * 8
            k_cache = torch.empty(tokens, heads, dim, device=dev, dtype=torch.float8_e4m3fn)
            v_cache = torch.empty_like(k_cache)
            k_scales = torch.empty(tokens, heads, device=dev, dtype=torch.float32)
            v_scales = torch.empty_like(k_scales)
            loc = torch.randperm(tokens, device=dev)
            calls = max(2, min(32, (256 << 20) // (2 * tokens * heads * dim * 3)))
            args = (k, v, k_cache, v_cache, k_scales, v_scales, loc)
            eager = time_calls(lambda: [step(*args) for _ in range(calls)], calls)
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(3):
                    step(*args)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                for _ in range(calls):
                    step(*args)
            replay = time_calls(graph.replay, calls)
            traffic = 2 * tokens * heads * dim * 3 + tokens * 8 + 2 * 4 * tokens * heads
            row = {"name": f"torch_token_head/bf16/e4m3/hot/{tokens}x{heads}x{dim}", "eager_us": eager, "graph_us": replay,
                   "traffic_MB": traffic * 1e-6}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(json.dumps({"gpu": torch.cuda.get_device_name(), "torch": torch.__version__}), file=sys.stderr)


if __name__ == "__main__":
    main()
