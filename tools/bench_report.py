#!/usr/bin/env python3
"""Turns kvcast_bench's JSON into Markdown tables, the issue's target checks and a PNG plot.

    python3 tools/bench_report.py RUN.json [RUN2.json ...] [--md benchmarks/RESULTS.md] [--png docs/bench.png]
                                  [--readme README.md] [--save benchmarks/results/NAME.json]

Several JSON files of one session (kvcast_bench run with different filters) are merged; --save
writes the merged rows, trimmed to what this script reads, so a run can be committed and the
report regenerated from it.

Rows are grouped by name over repetitions: the value is the median of the repetitions' median
times, the noise the largest relative spread between repetitions of that row.
"""
import argparse
import collections
import json
import pathlib
import re
import statistics
import sys

NAME = re.compile(r"^(?P<variant>[a-z_]+)/(?P<dtype>\w+)/(?P<fmt>e4m3|e5m2)/(?P<timing>graph|stream)/(?P<cache>hot|cold)/"
                  r"(?P<tokens>\d+)x(?P<heads>\d+)x(?P<dim>\d+)(?:/(?P<tag>[\w]+))?$")


# Below this traffic a stream-launched call takes the host's launch interval, whatever it does.
LAUNCH_BOUND_MB = 10

KEEP = ("name", "run_name", "run_type", "repetition_index", "us", "GBps", "copy_GBps", "pct_of_copy", "traffic_MB",
        "pair_us", "cpu_time", "real_time", "calls_per_sample", "sets")


def load(paths):
    rows = collections.defaultdict(list)
    context, kept = {}, []
    for path in paths:
        data = json.loads(pathlib.Path(path).read_text())
        context = context or data["context"]
        for b in data["benchmarks"]:
            if b.get("run_type") == "aggregate" or b.get("error_occurred"):
                continue
            b = {k: v for k, v in b.items() if k in KEEP}
            kept.append(b)
            name = b.get("run_name", b["name"]).split("/iterations:")[0]
            rows[name].append(b)
    return context, rows, kept


def summarize(rows):
    out = {}
    for name, reps in rows.items():
        m = NAME.match(name)
        if not m or "us" not in reps[0]:
            continue
        us = [r["us"] for r in reps]
        copy = [r["traffic_MB"] / r["copy_GBps"] * 1e3 for r in reps]  # copy time (us)
        spread = (max(us) - min(us)) / statistics.mean(us) if len(us) > 1 else 0.0
        key = (m["variant"], m["dtype"], m["fmt"], m["timing"], m["cache"], int(m["tokens"]), int(m["heads"]),
               int(m["dim"]), m["tag"] or "")
        out[key] = dict(us=statistics.median(us), copy_us=statistics.median(copy), traffic_mb=reps[0]["traffic_MB"],
                        spread=spread, reps=len(us))
    return out


def gbps(r):
    return r["traffic_mb"] / r["us"] * 1e3  # MB/us = TB/s


def pct(r):
    return 100.0 * r["copy_us"] / r["us"]


def table(s, dtype, fmt, timing, cache, shapes):
    lines = ["| tokens | heads x dim | MB moved | copy us | kvcast us | GB/s | % of copy | vs SGLang | kvcast_ip us | ip vs SGLang | SGLang us | legacy us |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    nan = float("nan")
    for (t, h, d) in shapes:
        k = s.get(("kvcast", dtype, fmt, timing, cache, t, h, d, ""))
        ip = s.get(("kvcast_ip", dtype, fmt, timing, cache, t, h, d, ""))
        g = s.get(("sglang", dtype, fmt, timing, cache, t, h, d, ""))
        l = s.get(("legacy", dtype, fmt, timing, cache, t, h, d, ""))
        if not k:
            continue
        lines.append(f"| {t} | {h}x{d} | {k['traffic_mb']:.2f} | {k['copy_us']:.2f} | {k['us']:.2f} | {gbps(k):.0f} | "
                     f"{pct(k):.0f}% | {(g['us'] / k['us']) if g else nan:.2f}x | {ip['us'] if ip else nan:.2f} | "
                     f"{(g['us'] / ip['us']) if g and ip else nan:.2f}x | {g['us'] if g else nan:.2f} | {l['us'] if l else nan:.2f} |")
    return "\n".join(lines)


def worst_large(s, variant):
    """The lowest copy-time / kernel-time ratio from 64 MB up (cold, bf16/fp16, E4M3, contiguous)."""
    worst = None
    for k, r in s.items():
        v, dt, fmt, timing, cache, t, h, d, tag = k
        if v == variant and fmt == "e4m3" and cache == "cold" and dt in ("bf16", "f16") and not tag and r["traffic_mb"] >= 64:
            ratio = r["copy_us"] / r["us"]
            if worst is None or ratio < worst[0]:
                worst = (ratio, "/".join(map(str, k)))
    return worst


def targets(s):
    out = []
    # 1. >= 64 MB traffic, cold, bf16/f16, E4M3, contiguous: kvcast >= 1.00x copy.
    for variant, label in (("kvcast", ">= 64 MB, cold, bf16/fp16 E4M3, contiguous"),
                           ("kvcast_ip", "same, input-precision mode (SGLang's numerics)")):
        worst = worst_large(s, variant)
        if worst:
            out.append(f"- {label}: worst {variant}/copy GB/s ratio **{worst[0]:.3f}** ({worst[1]})")
    # 2. decode 1-16 tokens, cold, graph: time <= copy; vs SGLang.
    dec = [(k, r) for k, r in s.items() if k[0] == "kvcast" and k[2] == "e4m3" and k[3] == "graph" and k[4] == "cold"
           and k[5] <= 16 and not k[8] and k[1] in ("bf16", "f16")]
    if dec:
        worst_copy = min(r["copy_us"] / r["us"] for _, r in dec)
        sg = [s[("sglang",) + k[1:]]["us"] / r["us"] for k, r in dec if ("sglang",) + k[1:] in s]
        out.append(f"- decode (1-16 tokens, cold, graph): copy time / kvcast time >= **{worst_copy:.3f}** "
                   f"(>= 1 means kvcast is no slower than the copy); kvcast speed-up over SGLang "
                   f"**{min(sg):.2f}x .. {max(sg):.2f}x** (median {statistics.median(sg):.2f}x)")
    # 2b. the floors: kvcast's own traffic with no arithmetic (no_math), and the copy as a plain kernel.
    floor = [(k, r) for k, r in s.items() if k[0] == "no_math" and k[2] == "e4m3" and k[3] == "graph" and k[4] == "cold"
             and not k[8] and k[1] in ("bf16", "f16")]
    if floor:
        big = [r["copy_us"] / r["us"] for k, r in floor if r["traffic_mb"] >= 64]
        small = [(k, r) for k, r in floor if k[5] <= 16]
        dec = [r["copy_us"] / r["us"] for _, r in small]
        ip = [s[("kvcast_ip",) + k[1:]]["us"] / r["us"] for k, r in small if ("kvcast_ip",) + k[1:] in s]
        fp = [s[("kvcast",) + k[1:]]["us"] / r["us"] for k, r in small if ("kvcast",) + k[1:] in s]
        ck = [s[("copy_kernel",) + k[1:]]["us"] / r["copy_us"] for k, r in small if ("copy_kernel",) + k[1:] in s]
        if big and small and ip and fp and ck:
            out.append(f"- floor (`no_math`: kvcast's kernel with the conversion taken out, the same traffic; cold, graph): "
                       f"from 64 MB up no_math/copy GB/s **{min(big):.3f} .. {max(big):.3f}**; at decode (1-16 tokens) "
                       f"copy time / no_math time **{min(dec):.3f} .. {max(dec):.3f}**, kvcast_ip time / no_math time "
                       f"**{min(ip):.3f} .. {max(ip):.3f}**, kvcast (fp32) **{min(fp):.3f} .. {max(fp):.3f}**; "
                       f"a plain copy kernel's time / cudaMemcpyAsync's **{min(ck):.3f} .. {max(ck):.3f}**")
    # 2c. decode with PDL between calls (each call's launch overlaps the one before it).
    for cache in ("cold", "hot"):
        cells = []
        for variant in ("kvcast_pdl", "kvcast_ip_pdl"):
            rs = [(k, r) for k, r in s.items() if k[0] == variant and k[3] == "graph" and k[4] == cache and k[5] <= 16]
            if rs:
                copy = [r["copy_us"] / r["us"] for _, r in rs]
                plain = [s[(variant[:-4],) + k[1:]]["us"] / r["us"] for k, r in rs if (variant[:-4],) + k[1:] in s]
                cells.append(f"{variant}: copy time / its time **{min(copy):.3f} .. {max(copy):.3f}**, "
                             f"speed-up over the same calls without PDL {min(plain):.2f}x .. {max(plain):.2f}x")
        if cells:
            out.append(f"- decode (1-16 tokens, {cache}, graph) with PDL between consecutive calls: " + "; ".join(cells))
    # 2d. the scatter: large calls with sorted slots (loc = identity) against the same calls with shuffled ones.
    cells = []
    for variant in ("kvcast", "kvcast_ip", "no_math", "sglang"):
        pairs = [(r["copy_us"] / r["us"], s[k[:8] + ("",)]["copy_us"] / s[k[:8] + ("",)]["us"])
                 for k, r in s.items() if k[0] == variant and k[8] == "sorted" and k[3] == "graph" and k[4] == "cold"
                 and r["traffic_mb"] >= 64 and k[:8] + ("",) in s]
        if pairs:
            cells.append(f"{variant} **{min(p[0] for p in pairs):.3f} .. {max(p[0] for p in pairs):.3f}** "
                         f"(shuffled {min(p[1] for p in pairs):.3f} .. {max(p[1] for p in pairs):.3f})")
    if cells:
        out.append("- from 64 MB up with sorted slots (loc = identity; cold, graph), GB/s ratio to the copy: " + "; ".join(cells))
    # 3. never slower than SGLang on its grid, either timing mode (cold and hot). Launched from the
    # host, calls below ~10 MB take the host's launch interval whatever they do (the empty kernel
    # as long as the others): those rows are counted apart, with the empty kernel's range.
    def below(rows):  # rows slower than SGLang by more than their noise (at least 2%)
        return sum(x[0] < 1 - max(x[1], 0.02) for x in rows)

    def vs_sglang(rows):
        lo = min(rows)
        return (f"speed ratio to SGLang min **{lo[0]:.3f}** at {'/'.join(map(str, lo[2]))} "
                f"(noise there {lo[1] * 100:.1f}%), median {statistics.median(x[0] for x in rows):.3f}, "
                f"{below(rows)} of {len(rows)} rows below 1 beyond noise")
    for variant, timing in (("kvcast", "graph"), ("kvcast", "stream"), ("kvcast_ip", "graph"), ("kvcast_ip", "stream")):
        ratios = []
        for k, r in s.items():
            if k[0] == variant and k[2] == "e4m3" and k[3] == timing and not k[8]:
                g = s.get(("sglang",) + k[1:])
                if g:
                    ratios.append((g["us"] / r["us"], max(g["spread"], r["spread"]), k, r["traffic_mb"]))
        if not ratios:
            continue
        if timing == "graph":
            out.append(f"- {variant}, {timing}: " + vs_sglang(ratios))
            continue
        big = [x for x in ratios if x[3] >= LAUNCH_BOUND_MB]
        small = [x for x in ratios if x[3] < LAUNCH_BOUND_MB]
        empty = [r["us"] for k, r in s.items() if k[0] == "empty" and k[3] == "stream" and r["traffic_mb"] < LAUNCH_BOUND_MB]
        line = f"- {variant}, {timing}, from {LAUNCH_BOUND_MB} MB: " + (vs_sglang(big) if big else "no rows")
        if small and empty:
            line += (f"; below {LAUNCH_BOUND_MB} MB (launch-bound: the empty kernel takes {min(empty):.2f} .. "
                     f"{max(empty):.2f} us a call there) {below(small)} of "
                     f"{len(small)} rows below 1 beyond their own repetitions' noise")
        out.append(line)
    # 4. odd and strided inputs vs contiguous, >= 64 MB (each variant against its own contiguous
    # 8x128; odd_sorted, odd rows with sorted slots, against 8x128 with sorted slots).
    for tag in ("odd", "odd_sorted", "qkv_slice"):
        base_tag = "sorted" if tag.endswith("sorted") else ""
        for k, r in sorted(s.items()):
            if k[0] == "kvcast" and k[8] == tag and r["traffic_mb"] >= 64:
                base = s.get(("kvcast", k[1], k[2], k[3], k[4], k[5], 8, 128, base_tag))
                if base:
                    line = (f"- {tag} {k[5]}x{k[6]}x{k[7]} ({k[3]}): {gbps(r):.0f} GB/s = "
                            f"**{gbps(r) / gbps(base) * 100:.0f}%** of contiguous 8x128{' (sorted slots)' if base_tag else ''} "
                            f"({gbps(base):.0f} GB/s)")
                    for other in ("kvcast_ip", "no_math"):
                        o, ob = s.get((other,) + k[1:]), s.get((other,) + k[1:6] + (8, 128, base_tag))
                        if o and ob:
                            line += f"; {other} {gbps(o) / gbps(ob) * 100:.0f}%"
                    out.append(line)
    # 5. fp32 mode with other scales (1: exact reciprocal; 3: many inputs on rounding boundaries).
    for k, r in sorted(s.items()):
        if k[0] == "kvcast" and k[8] in ("scale1", "scale3") and k[5] in (2048, 32768):
            base = s.get(k[:8] + ("",))
            if base:
                out.append(f"- fp32 mode, {k[8].replace('scale', 'scale ')} {k[5]}x{k[6]}x{k[7]} ({k[3]}, {k[4]}): "
                           f"**{pct(r):.0f}%** of copy (calibrated scale: {pct(base):.0f}%)")
    noise = [r["spread"] for r in s.values() if r["reps"] > 1]
    if noise:
        out.append(f"- noise between repetitions: median {statistics.median(noise) * 100:.1f}%, "
                   f"90th percentile {sorted(noise)[int(0.9 * len(noise))] * 100:.1f}%")
    return "\n".join(out)


def extras(rows):
    out = []
    host = {n: r[0] for n, r in rows.items() if n.startswith("host/")}
    if host:
        out.append("| host call | CPU ns per call |\n|---|---:|")
        for n, r in sorted(host.items()):
            out.append(f"| {n} | {r['cpu_time']:.0f} |")
    pdl = {}
    for n, reps in rows.items():
        m = re.match(r"pdl/.*/(\d+)x8x128/(on|off)$", n)
        if m:
            pdl.setdefault(int(m[1]), {})[m[2]] = statistics.median(r["pair_us"] for r in reps)
    if pdl:
        out.append("\n| producer + kvcast, tokens (8x128) | without PDL us | with PDL us | saving |\n|---:|---:|---:|---:|")
        for t, v in sorted(pdl.items()):
            if "on" in v and "off" in v:
                out.append(f"| {t} | {v['off']:.2f} | {v['on']:.2f} | {v['off'] - v['on']:.2f} us ({(1 - v['on'] / v['off']) * 100:.0f}%) |")
    return "\n".join(out)


def breakdown(s, dtype, timing, cache):
    """Decode sizes, each variant's time: where kvcast's time goes beyond the copy's."""
    cols = (("empty", "empty"), ("copy", "copy (cudaMemcpyAsync)"), ("copy_kernel", "copy kernel"),
            ("no_math", "no_math"), ("kvcast_ip", "kvcast_ip"), ("kvcast", "kvcast"), ("sglang", "SGLang"),
            ("kvcast_ip_pdl", "kvcast_ip + PDL"), ("kvcast_pdl", "kvcast + PDL"))
    lines = ["| tokens | heads x dim | " + " | ".join(c[1] + " us" for c in cols) + " |",
             "|---:|---|" + "---:|" * len(cols)]
    shapes = sorted({(k[5], k[6], k[7]) for k in s if k[0] == "no_math" and k[5] <= 16 and not k[8]})
    for (t, h, d) in shapes:
        cells = []
        for variant, _ in cols:
            r = s.get((variant if variant != "copy" else "kvcast", dtype, "e4m3", timing, cache, t, h, d, ""))
            cells.append("" if not r else f"{(r['copy_us'] if variant == 'copy' else r['us']):.2f}")
        lines.append(f"| {t} | {h}x{d} | " + " | ".join(cells) + " |")
    return "\n".join(lines) if shapes else ""


def plot(s, path, gpu):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), sharey=True)
    for ax, timing in zip(axes, ("graph", "stream")):
        for variant, style in (("copy", "k--"), ("kvcast", "C0o-"), ("kvcast_ip", "C2^-"), ("sglang", "C1s-"), ("legacy", "C3x-")):
            pts = []
            for k, r in s.items():
                if k[1] == "bf16" and k[2] == "e4m3" and k[3] == timing and k[4] == "cold" and not k[8] and k[0] in (variant, "kvcast"):
                    if variant == "copy" and k[0] == "kvcast":
                        pts.append((r["traffic_mb"], r["traffic_mb"] / r["copy_us"] * 1e3))
                    elif k[0] == variant and variant != "copy":
                        pts.append((r["traffic_mb"], gbps(r)))
            pts.sort()
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, ms=3, lw=1,
                        label="same-bytes copy (roofline)" if variant == "copy" else variant)
        ax.set_xscale("log")
        ax.set_xlabel("MB moved per call (read + written)")
        ax.set_title(f"bf16 -> e4m3, cold L2, {'CUDA-graph replay' if timing == 'graph' else 'stream launches'}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("GB/s")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"kvcast on {gpu} (all shapes of the grid; higher is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("json", nargs="+")
    ap.add_argument("--save")
    ap.add_argument("--md")
    ap.add_argument("--png")
    ap.add_argument("--readme")
    args = ap.parse_args()
    ctx, rows, kept = load(args.json)
    if args.save:
        keep_ctx = {k: ctx.get(k) for k in ("date", "host_name", "gpu", "l2_bytes", "sms", "num_cpus", "mhz_per_cpu")}
        pathlib.Path(args.save).write_text(json.dumps({"context": keep_ctx, "benchmarks": kept}, separators=(",", ":")))
    s = summarize(rows)
    gpu = ctx.get("gpu", "unknown GPU")
    grid = sorted({(k[5], k[6], k[7]) for k in s if k[0] == "kvcast" and not k[8] and k[1] == "bf16" and k[2] == "e4m3"})
    readme_shapes = [x for x in grid if (x[1], x[2]) in ((8, 128), (32, 256)) and x[0] in (1, 16, 256, 2048, 8192, 32768)]
    head = f"GPU: **{gpu}**, {ctx.get('date', '')}; medians of {max(r['reps'] for r in s.values())} repetitions."
    md = [f"# kvcast benchmark results\n\n{head}\n\nGenerated by `tools/bench_report.py` from `kvcast_bench` JSON.\n",
          "## Targets\n", targets(s), "\n## Host cost and programmatic dependent launch\n", extras(rows)]
    for cache in ("cold", "hot"):
        b = breakdown(s, "bf16", "graph", cache)
        if b:
            md.append(f"\n## Where the time goes at decode: bf16 -> e4m3, graph, {cache} L2\n")
            md.append("`no_math` is kvcast's input-precision kernel with each conversion replaced by taking the "
                      "element's high byte: the same plan, launch, loads, slot arithmetic and stores. `copy kernel` "
                      "is the same-bytes copy as a plain kernel (one 16-byte vector a thread). `+ PDL`: the same "
                      "calls launched with programmatic dependent launch, each one's launch overlapping the call "
                      "before it.\n")
            md.append(b)
    for dtype in ("bf16", "f16"):
        for timing in ("graph", "stream"):
            for cache in ("cold", "hot"):
                md.append(f"\n## {dtype} -> e4m3, {timing}, {cache} L2\n")
                md.append(table(s, dtype, "e4m3", timing, cache, grid))
    text = "\n".join(md) + "\n"
    if args.md:
        pathlib.Path(args.md).write_text(text)
    else:
        print(text)
    if args.png:
        plot(s, args.png, gpu)
    if args.readme:
        readme = pathlib.Path(args.readme)
        block = "\n".join([head, "", "bf16 -> E4M3, cold L2, CUDA-graph replay (what a serving engine with graphs sees):", "",
                           table(s, "bf16", "e4m3", "graph", "cold", readme_shapes), "",
                           "Same, launched back to back from the host:", "",
                           table(s, "bf16", "e4m3", "stream", "cold", readme_shapes), "", targets(s)])
        src = readme.read_text()
        new = re.sub(r"<!-- bench:begin -->.*<!-- bench:end -->", f"<!-- bench:begin -->\n{block}\n<!-- bench:end -->", src, flags=re.S)
        if new == src and "<!-- bench:begin -->" not in src:
            sys.exit("README has no <!-- bench:begin --> / <!-- bench:end --> markers")
        readme.write_text(new)


if __name__ == "__main__":
    main()
