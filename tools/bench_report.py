#!/usr/bin/env python3
"""Turns kvcast_bench's JSON into README's table and plot, benchmarks/RESULTS.md, and A/B tables.

    python3 tools/bench_report.py RUN.json [RUN2.json ...] [--md benchmarks/RESULTS.md] [--png docs/bench.png]
                                  [--readme README.md] [--save benchmarks/results/NAME.json]
                                  [--ab A.json ... --vs B.json ...]

Several JSON files of one session (runs with different filters, or rounds of the same one) are
merged: a row's time is the median of its samples' medians (one per repetition or round), its
noise the relative spread (max - min) / median of those. --save writes the merged rows, trimmed
to what this script reads, so that the report can be regenerated from a committed file.

--ab/--vs: a same-call A/B (tools/gpu-ab.sh). For each row in both: A's and B's time, B's speed
relative to A (A time / B time), and whether B is slower than A by more than the noise (the
larger of the two sides' spreads, and at least 2%).
"""
import argparse
import collections
import json
import pathlib
import re
import statistics

NAME = re.compile(r"^(?P<variant>[a-z_]+)/(?P<dtype>\w+)/(?P<fmt>e4m3|e5m2)/(?P<timing>graph|stream)/(?P<cache>hot|cold)/"
                  r"(?P<tokens>\d+)x(?P<heads>\d+)x(?P<dim>\d+)(?:/(?P<tag>\w+))?$")
KEEP = ("name", "run_name", "run_type", "repetition_index", "us", "GBps", "copy_GBps", "pct_of_copy", "traffic_MB",
        "pair_us", "real_time", "cpu_time", "time_unit")
MIN_NOISE = 0.02
GRID = [(t, h, d) for t in (1, 16, 256, 2048, 8192, 32768) for (h, d) in ((8, 128), (32, 256))]


def load(paths):
    rows, context, kept = collections.defaultdict(list), {}, []
    for path in paths:
        data = json.loads(pathlib.Path(path).read_text())
        context = context or data["context"]
        for b in data["benchmarks"]:
            if b.get("run_type") == "aggregate" or b.get("error_occurred"):
                continue
            b = {k: v for k, v in b.items() if k in KEEP}
            kept.append(b)
            rows[b.get("run_name", b["name"]).split("/iterations:")[0]].append(b)
    return context, rows, kept


def summarize(rows):
    out = {}
    for name, reps in rows.items():
        m = NAME.match(name)
        if not m or "us" not in reps[0]:
            continue
        us = [r["us"] for r in reps]
        copy = [r["traffic_MB"] / r["copy_GBps"] * 1e3 for r in reps]
        med = statistics.median(us)
        key = (m["variant"], m["dtype"], m["fmt"], m["timing"], m["cache"], int(m["tokens"]), int(m["heads"]),
               int(m["dim"]), m["tag"] or "")
        out[key] = dict(us=med, copy_us=statistics.median(copy), mb=reps[0]["traffic_MB"],
                        spread=(max(us) - min(us)) / med if len(us) > 1 else 0.0, n=len(us))
    return out


def fmt_us(r):
    return f"{r['us']:.2f}" if r else "-"


def ratio(a, b):
    return f"{a['us'] / b['us']:.2f}x" if a and b else "-"


def grid_table(s, dtype, timing, cache, shapes=GRID):
    head = ("| tokens | heads x dim | MB moved | copy us | kvcast us | GB/s | % of copy | kvcast_ip us | SGLang design us | "
            "legacy us | kvcast vs SGLang design | ip vs SGLang design |")
    lines = [head, "|---:|---|" + "---:|" * 10]
    for (t, h, d) in shapes:
        get = lambda v: s.get((v, dtype, "e4m3", timing, cache, t, h, d, ""))
        k, ip, g, leg = get("kvcast"), get("kvcast_ip"), get("sglang"), get("legacy")
        if not k:
            continue
        lines.append(f"| {t} | {h}x{d} | {k['mb']:.2f} | {k['copy_us']:.2f} | {k['us']:.2f} | {k['mb'] / k['us'] * 1e3:.0f} | "
                     f"{100 * k['copy_us'] / k['us']:.0f}% | {fmt_us(ip)} | {fmt_us(g)} | {fmt_us(leg)} | {ratio(g, k)} | {ratio(g, ip)} |")
    return "\n".join(lines)


def rope_table(s, cache):
    lines = ["| tokens | heads x dim | rope_split us | rope_fused us | fused speed-up | kvcast write alone us |",
             "|---:|---|---:|---:|---:|---:|"]
    keys = sorted({(k[5], k[6], k[7]) for k in s if k[8] == "rope" and k[4] == cache})
    for (t, h, d) in keys:
        get = lambda v: s.get((v, "bf16", "e4m3", "graph", cache, t, h, d, "rope"))
        f, sp, w = get("rope_fused"), get("rope_split"), get("kvcast")
        lines.append(f"| {t} | {h}x{d} | {fmt_us(sp)} | {fmt_us(f)} | {ratio(sp, f)} | {fmt_us(w)} |")
    return "\n".join(lines)


SCALE_VARIANTS = ("kvcast", "kvcast_amax", "kvcast_head", "kvcast_head_amax", "kvcast_token_head", "kvcast_token_head_amax")
# Each scale kind's write without and with the amax output, and its name in the summaries.
AMAX_PAIRS = (("kvcast", "kvcast_amax", "per-tensor"), ("kvcast_head", "kvcast_head_amax", "per-head"),
              ("kvcast_token_head", "kvcast_token_head_amax", "per-(token, head)"))


def load_torch(paths):
    """tools/torch_scales.py's rows: {(tokens, heads, dim): {eager_us, graph_us}}."""
    out = {}
    for path in paths:
        for line in pathlib.Path(path).read_text().splitlines():
            row = json.loads(line)
            m = re.search(r"/(\d+)x(\d+)x(\d+)$", row.get("name", ""))
            if m:
                out[tuple(int(g) for g in m.groups())] = row
    return out


def scales_table(s, cache, torch_rows):
    head = ("| tokens | heads x dim | MB moved | copy us | per tensor us | + amax | per head | per head + amax | "
            "per (token, head) | + amax | (token, head) % of copy | (token, head) / per tensor |")
    if torch_rows:
        head += " PyTorch eager us | PyTorch graph us |"
    lines = [head, "|---:|---|" + "---:|" * (12 if torch_rows else 10)]
    keys = sorted({(k[5], k[6], k[7]) for k in s if k[8] == "scales" and k[4] == cache})
    for (t, h, d) in keys:
        get = lambda v: s.get((v, "bf16", "e4m3", "graph", cache, t, h, d, "scales"))
        rows = [get(v) for v in SCALE_VARIANTS]
        base, th = rows[0], rows[4]
        if not base:
            continue
        line = f"| {t} | {h}x{d} | {base['mb']:.2f} | {base['copy_us']:.2f} | " + " | ".join(fmt_us(r) for r in rows)
        line += f" | {100 * th['copy_us'] / th['us']:.0f}% | {th['us'] / base['us']:.3f} |" if th else " | - | - |"
        if torch_rows:
            tr = torch_rows.get((t, h, d))
            line += f" {tr['eager_us']:.1f} | {tr['graph_us']:.1f} |" if tr else " - | - |"
        lines.append(line)
    return "\n".join(lines)


def scales_sorted_table(s):
    """The scale kinds from 64 MB with loc = identity (tag scales_sorted) beside the same calls with
    loc a random permutation (tag scales): what the scatter of codes and scales costs each kind; and
    a plain scatter of the same rows and scales (scatter_copy), the floor of each pattern."""
    lines = ["| tokens | heads x dim | copy us | per tensor us (random / sorted) | + amax | per head + amax | "
             "per (token, head) | (token, head) % of copy (random / sorted) | scatter's cost: per tensor | per (token, head) | "
             "plain scatter us (random / sorted) | (token, head) % of the plain scatter (random / sorted) |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    keys = sorted({(k[5], k[6], k[7]) for k in s if k[8] == "scales_sorted" and k[4] == "cold"})
    for (t, h, d) in keys:
        get = lambda v, tag: s.get((v, "bf16", "e4m3", "graph", "cold", t, h, d, tag))
        pair = lambda v: (get(v, "scales"), get(v, "scales_sorted"))
        (pt, pt_s), (th, th_s) = pair("kvcast"), pair("kvcast_token_head")
        if not (pt and pt_s and th and th_s):
            continue
        both = lambda v: " / ".join(fmt_us(r) for r in pair(v))
        lines.append(f"| {t} | {h}x{d} | {th_s['copy_us']:.2f} | {both('kvcast')} | {both('kvcast_amax')} | "
                     f"{both('kvcast_head_amax')} | {both('kvcast_token_head')} | {100 * th['copy_us'] / th['us']:.0f}% / "
                     f"{100 * th_s['copy_us'] / th_s['us']:.0f}% | {100 * (pt['us'] / pt_s['us'] - 1):+.1f}% | "
                     f"{100 * (th['us'] / th_s['us'] - 1):+.1f}% | {both('scatter_copy')} | "
                     + " / ".join(f"{100 * f['us'] / w['us']:.0f}%" if f and w else "-"
                                  for f, w in zip(pair("scatter_copy"), (th, th_s))) + " |")
    return "\n".join(lines)


def scales_zeroed_table(s):
    """The scale kinds with the amax output zeroed before every call (tag scales_zeroed: a memset node
    before each call of every variant, as a caller that wants each step's amax has): what the amax
    costs each kind over the same write without it, both behind the same memset."""
    lines = ["| tokens | heads x dim | per tensor us | + amax | amax costs | per head us | + amax | amax costs | "
             "per (token, head) us | + amax | amax costs |", "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    keys = sorted({(k[5], k[6], k[7]) for k in s if k[8] == "scales_zeroed" and k[4] == "cold"})
    for (t, h, d) in keys:
        get = lambda v: s.get((v, "bf16", "e4m3", "graph", "cold", t, h, d, "scales_zeroed"))
        cells = []
        for without, with_amax, _ in AMAX_PAIRS:
            b, a = get(without), get(with_amax)
            cost = f"{a['us'] / b['us']:.3f}x" if a and b else "-"
            cells += [fmt_us(b), fmt_us(a), cost]
        lines.append(f"| {t} | {h}x{d} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def scales_zeroed_summary(s):
    pick = lambda v, pred: {k[4:8]: s[k] for k in s if k[0] == v and k[8] == "scales_zeroed" and k[4] == "cold" and pred(k)}
    out = []
    for label, pred, unit in (("at decode (1-16 tokens, ", lambda k: k[5] <= 16, "ns"),
                              ("from 64 MB up (", lambda k: s[k]["mb"] >= 64, "x")):
        for without, with_amax, kind in AMAX_PAIRS:
            b, a = pick(without, pred), pick(with_amax, pred)
            ks = [k for k in a if k in b]
            if not ks:
                continue
            if unit == "ns":
                vals = [(a[k]["us"] - b[k]["us"]) * 1e3 for k in ks]
                out.append(f"- amax zeroed before each call, {label}cold, graph): **{min(vals):+.0f} .. {max(vals):+.0f} ns** "
                           f"over the {kind} write")
            else:
                vals = [a[k]["us"] / b[k]["us"] for k in ks]
                out.append(f"- amax zeroed before each call, {label}cold, graph): **{min(vals):.3f}x .. {max(vals):.3f}x** "
                           f"the time of the {kind} write")
    return out


def scales_summary(s, torch_rows):
    pick = lambda v, pred: {k[4:8]: s[k] for k in s if k[0] == v and k[8] == "scales" and k[3] == "graph" and pred(k)}
    large = lambda k: s[k]["mb"] >= 64 and k[4] == "cold"
    decode = lambda k: k[5] <= 16 and k[4] == "cold"
    out = []
    th = pick("kvcast_token_head", large)
    if th:
        vals = [r["copy_us"] / r["us"] for r in th.values()]
        out.append(f"- per-(token, head) write, from 64 MB up (bf16, cold, graph): **{min(vals):.3f} .. {max(vals):.3f}** of the "
                   "copy of its bytes (inputs, codes, scales, slots)")
    base_d, th_d = pick("kvcast", decode), pick("kvcast_token_head", decode)
    vals = [th_d[k]["us"] / base_d[k]["us"] for k in th_d if k in base_d]
    if vals:
        out.append(f"- per-(token, head) write, decode (1-16 tokens, cold, graph): **{min(vals):.3f}x .. {max(vals):.3f}x** "
                   "the time of the per-tensor write")
    floor_d = pick("token_head_floor", decode)
    vals = [floor_d[k]["us"] / base_d[k]["us"] for k in floor_d if k in base_d]
    if vals:
        kv = [th_d[k]["us"] / floor_d[k]["us"] for k in floor_d if k in th_d]
        out.append(f"- its floor (token_head_floor: the same arithmetic, nothing general), decode (1-16 tokens, cold, graph): "
                   f"**{min(vals):.3f}x .. {max(vals):.3f}x** the per-tensor write; kvcast's at **{min(kv):.3f}x .. {max(kv):.3f}x** "
                   "the floor's time")
    th_s = {k[4:8]: s[k] for k in s if k[0] == "kvcast_token_head" and k[8] == "scales_sorted" and k[4] == "cold"}
    if th_s:
        vals = [r["copy_us"] / r["us"] for r in th_s.values()]
        out.append(f"- per-(token, head) write, from 64 MB with sorted slots (loc = identity; bf16, cold, graph): **{min(vals):.3f} .. "
                   f"{max(vals):.3f}** of the copy of its bytes")
    for tag, slots in (("scales", "random slots"), ("scales_sorted", "sorted slots")):
        got = lambda v: {k[4:8]: s[k] for k in s if k[0] == v and k[8] == tag and k[4] == "cold" and s[k]["mb"] >= 64}
        floor, write = got("scatter_copy"), got("kvcast_token_head")
        ks = [k for k in floor if k in write]
        if ks:
            of_copy = [floor[k]["copy_us"] / floor[k]["us"] for k in ks]
            of_floor = [floor[k]["us"] / write[k]["us"] for k in ks]
            out.append(f"- a plain scatter of the same rows and scales (scatter_copy: a byte an element, a float a (token, head), no "
                       f"arithmetic; the pattern's floor), from 64 MB, {slots} (cold, graph): **{min(of_copy):.3f} .. {max(of_copy):.3f}** "
                       f"of the copy; the per-(token, head) write runs at **{min(of_floor):.3f} .. {max(of_floor):.3f}** of its speed")
    base_l = pick("kvcast", large)
    for v, label in (("kvcast_head", "per-head scales"), ("kvcast_amax", "per tensor + amax"),
                     ("kvcast_head_amax", "per head + amax")):
        got = pick(v, large)
        vals = [got[k]["us"] / base_l[k]["us"] for k in got if k in base_l]
        if vals:
            out.append(f"- {label}, from 64 MB up (bf16, cold, graph): **{min(vals):.3f}x .. {max(vals):.3f}x** the time of the "
                       "per-tensor write")
    for without, with_amax, label in AMAX_PAIRS:
        for cache in ("cold", "hot"):
            dec = lambda k, c=cache: k[5] <= 16 and k[4] == c
            b, a = pick(without, dec), pick(with_amax, dec)
            vals = [(a[k]["us"] - b[k]["us"]) * 1e3 for k in a if k in b]
            if vals:
                out.append(f"- amax added at decode (1-16 tokens, {cache}, graph): **{min(vals):+.0f} .. {max(vals):+.0f} ns** over the "
                           f"{label} write")
    out += scales_zeroed_summary(s)
    if torch_rows:
        hot = pick("kvcast_token_head", lambda k: k[4] == "hot")
        for label, pred in (("decode (1-16 tokens)", lambda t: t[1] <= 16), ("from 64 MB up", lambda t: hot[t]["mb"] >= 64)):
            vals = [(torch_rows[t[1:]]["graph_us"] / hot[t]["us"], torch_rows[t[1:]]["eager_us"] / hot[t]["us"])
                    for t in hot if t[1:] in torch_rows and pred(t)]
            if vals:
                out.append(f"- against PyTorch's eager ops for the same write, {label} (hot): **{min(v[0] for v in vals):.0f}x .. "
                           f"{max(v[0] for v in vals):.0f}x** faster than them replayed in a CUDA graph, "
                           f"**{min(v[1] for v in vals):.0f}x .. {max(v[1] for v in vals):.0f}x** than eager launches")
    return out


SCALE_AXIS = [("calibrated", "0.0173/0.0229"), ("1", "1"), ("3", "3"), ("0_5", "0.5"), ("1_3", "1/3"), ("0_1", "0.1"),
              ("0_7_1_3", "0.7/1.3"), ("0_37", "0.37")]


def scale_axis_table(s, cache):
    """Issue #19's axis: the same write with each scale pair, both modes (bf16 8x128, graph)."""
    lines = ["| tokens | scales (K/V) | copy us | fp32 mode us | % of copy | input precision us | % of copy | fp32 / input precision |",
             "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for t in sorted({k[5] for k in s if k[8].startswith("scale_") and k[4] == cache}):
        for tag, label in SCALE_AXIS:
            get = lambda v: s.get((v, "bf16", "e4m3", "graph", cache, t, 8, 128, "scale_" + tag))
            f, ip = get("kvcast"), get("kvcast_ip")
            if not f:
                continue
            pct = lambda r: f"{100 * r['copy_us'] / r['us']:.0f}%" if r else "-"
            line = f"| {t} | {label} | {f['copy_us']:.2f} | {f['us']:.2f} | {pct(f)} | {fmt_us(ip)} | {pct(ip)} | "
            lines.append(line + (f"{f['us'] / ip['us']:.3f} |" if ip else "- |"))
    return "\n".join(lines)


def scale_axis_summary(s):
    out = []
    rows = {k: s[k] for k in s if k[8].startswith("scale_") and k[4] == "cold" and k[3] == "graph"}
    for label, pred in (("decode (1-16 tokens)", lambda k: k[5] <= 16), ("from 64 MB up", lambda k: s[k]["mb"] >= 64)):
        pairs = [(rows[k]["us"], rows[("kvcast_ip",) + k[1:]]["us"]) for k in rows
                 if k[0] == "kvcast" and pred(k) and ("kvcast_ip",) + k[1:] in rows]
        if pairs:
            vals = [a / b for a, b in pairs]
            out.append(f"- fp32 mode over the scale axis (1, 0.5, 3, 1/3, 0.1, 0.7/1.3, 0.37, calibrated), {label}, cold: "
                       f"**{min(vals):.3f}x .. {max(vals):.3f}x** the time of input precision with the same scales")
    return out


READ_TAGS = ("read_slots", "read_pages")
POOL_TAGS = ("pool_live1", "pool_live5", "pool_live20", "pool_all")


def read_roof_us(s, key):
    """A read row's roofline: the faster of its own cudaMemcpy of the same bytes and, where the run
    has one (cold rows), a plain copy kernel of those bytes (`copy_kernel/...`): cudaMemcpy runs
    the page-table rows' byte counts at about 2/3 of the kernel's speed (NOTES #16b, #16c)."""
    kernel = s.get(("copy_kernel",) + key[1:])
    return min(s[key]["copy_us"], kernel["us"]) if kernel else s[key]["copy_us"]


def read_table(s, cache):
    """The read's rows: gathers by slots (per tensor, per (token, head)) and by page table, against
    read_roof_us."""
    lines = ["| tokens | heads x dim | rows by | MB moved | copy us | upcast us | % of copy | per (token, head) us | % of copy | "
             "plain gather us | upcast / gather |",
             "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    keys = sorted({(k[5], k[6], k[7], k[8]) for k in s if k[8] in READ_TAGS and k[4] == cache})
    for (t, h, d, tag) in keys:
        key = lambda v: (v, "bf16", "e4m3", "graph", cache, t, h, d, tag)
        base, th = s.get(key("upcast")), s.get(key("upcast_token_head"))
        if not base:
            continue
        roof = read_roof_us(s, key("upcast"))
        pct = lambda v: f"{100 * read_roof_us(s, key(v)) / s[key(v)]['us']:.0f}%" if key(v) in s else "-"
        gather = s.get(key("gather_copy"))
        lines.append(f"| {t} | {h}x{d} | {'slots' if tag == 'read_slots' else 'page table'} | {base['mb']:.2f} | "
                     f"{roof:.2f} | {base['us']:.2f} | {pct('upcast')} | {fmt_us(th)} | {pct('upcast_token_head')} | {fmt_us(gather)} | "
                     + (f"{base['us'] / gather['us']:.2f}x |" if gather else "- |"))
    return "\n".join(lines)


def pool_table(s, cache, torch_pool):
    """SGLang #35291's shape: a pool of 2^20 rows of one 576 head; its live rows by page table
    against dequantizing the whole pool (kvcast, and PyTorch's .to(bf16) where measured)."""
    lines = ["| rows read | of the pool | MB moved | upcast us | % of copy | whole pool, kvcast us | whole pool / live | "
             "whole pool, PyTorch us | PyTorch / live |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    full = next((s[k] for k in s if k[8] == "pool_all" and k[4] == cache and k[0] == "upcast"), None)
    for tag in POOL_TAGS:
        r = next((s[k] for k in s if k[8] == tag and k[4] == cache and k[0] == "upcast"), None)
        key = next((k for k in s if k[8] == tag and k[4] == cache and k[0] == "upcast"), None)
        if not r:
            continue
        torch_us = torch_pool.get("pool_all")
        line = f"| {key[5]} | {100 * key[5] / (1 << 20):.1f}% | {r['mb']:.1f} | {r['us']:.1f} | {100 * r['copy_us'] / r['us']:.0f}% | "
        line += f"{full['us']:.1f} | {full['us'] / r['us']:.1f}x | " if full else "- | - | "
        line += f"{torch_us:.1f} | {torch_us / r['us']:.1f}x |" if torch_us else "- | - |"
        lines.append(line)
    return "\n".join(lines)


def read_summary(s, torch_pool):
    pick = lambda v, pred: {k: s[k] for k in s if k[0] == v and k[3] == "graph" and pred(k)}
    out = []
    # Ratios against read_roof_us (the faster of cudaMemcpy and a copy kernel of the same bytes).
    for v, tag, label in (("upcast", "read_slots", "read by slots (per tensor)"),
                          ("upcast_token_head", "read_slots", "read by slots (per (token, head))"),
                          ("upcast", "read_pages", "read by page table (per tensor)")):
        large = pick(v, lambda k: k[8] == tag and k[4] == "cold" and s[k]["mb"] >= 64)
        if large:
            vals = [read_roof_us(s, k) / s[k]["us"] for k in large]
            out.append(f"- {label}, from 64 MB up (bf16, cold, graph): **{min(vals):.3f} .. {max(vals):.3f}** of the copy of its "
                       "bytes (codes, scales, outputs, indices)")
    # Against a plain gather of the same rows (widened, no scale): what the pattern itself costs.
    for tag, rows, form in (("read_slots", "the same rows", "by slots"), ("read_pages", "the page table's rows (as slots)", "by page table")):
        large = pick("upcast", lambda k: k[8] == tag and k[4] == "cold" and s[k]["mb"] >= 64 and ("gather_copy",) + k[1:] in s)
        if large:
            gather = [s[("gather_copy",) + k[1:]] for k in large]
            vals = [g["us"] / s[k]["us"] for g, k in zip(gather, large)]
            roofs = [read_roof_us(s, k) / g["us"] for g, k in zip(gather, large)]
            out.append(f"- a plain gather of {rows} (codes widened, no scale; the pattern's floor), from 64 MB up (cold, graph): "
                       f"**{min(roofs):.3f} .. {max(roofs):.3f}** of the copy; the read {form} runs at **{min(vals):.3f} .. {max(vals):.3f}** of its speed")
    small = pick("upcast", lambda k: k[8] == "read_slots" and k[4] == "cold" and k[5] <= 4096)
    if small:
        vals = [read_roof_us(s, k) / s[k]["us"] for k in small]
        out.append(f"- read by slots, decode-sized gathers (2048-4096 rows, cold, graph): **{min(vals):.3f} .. {max(vals):.3f}** of the copy")
    full = next((s[k] for k in s if k[8] == "pool_all" and k[4] == "cold" and k[0] == "upcast"), None)
    for tag, pct in (("pool_live1", "1%"), ("pool_live5", "5%"), ("pool_live20", "20%")):
        r = next((s[k] for k in s if k[8] == tag and k[4] == "cold" and k[0] == "upcast"), None)
        if r and full:
            line = (f"- #35291's pool (2^20 rows x 576, pages of 64), {pct} live, cold: the gather **{r['us']:.1f} us**, "
                    f"**{full['us'] / r['us']:.1f}x** faster than kvcast dequantizing the whole pool")
            if torch_pool.get("pool_all"):
                line += f", **{torch_pool['pool_all'] / r['us']:.0f}x** than PyTorch's `.to(torch.bfloat16)` of it"
            out.append(line)
    return out


def load_torch_pool(paths):
    """tools/torch_read.py's rows: {name: us}."""
    out = {}
    for path in paths:
        for line in pathlib.Path(path).read_text().splitlines():
            row = json.loads(line)
            out[row["name"]] = row["us"]
    return out


def ratio_range(s, num, den, pred):
    vals = [s[k]["us"] / s[k2]["us"] for k in s if k[0] == num and pred(k)
            for k2 in [(den,) + k[1:]] if k2 in s]
    return (min(vals), max(vals)) if vals else (float("nan"), float("nan"))


def copy_ratio_range(s, variant, pred):
    vals = [s[k]["copy_us"] / s[k]["us"] for k in s if k[0] == variant and pred(k)]
    return (min(vals), max(vals)) if vals else (float("nan"), float("nan"))


def summary_lines(s):
    large = lambda k: k[1] in ("bf16", "f16") and k[3] == "graph" and k[4] == "cold" and k[8] == "" and s[k]["mb"] >= 64
    decode = lambda k: k[1] in ("bf16", "f16") and k[3] == "graph" and k[4] == "cold" and k[8] == "" and k[5] <= 16
    out = []
    for v in ("kvcast", "kvcast_ip"):
        lo, hi = copy_ratio_range(s, v, large)
        out.append(f"- {v}, from 64 MB up (bf16/fp16, cold, graph): **{lo:.3f} .. {hi:.3f}** of the copy's speed")
        lo, hi = ratio_range(s, "sglang", v, decode)
        out.append(f"- {v}, decode (1-16 tokens, cold, graph): **{lo:.2f}x .. {hi:.2f}x** the speed of SGLang's design "
                   "(re-implemented in benchmarks/baselines.cuh)")
    rope = [(k, s[k]["us"] / s[("rope_fused",) + k[1:]]["us"]) for k in s if k[0] == "rope_split" and ("rope_fused",) + k[1:] in s]
    for label, pred in (("decode (1-16 tokens)", lambda k: k[5] <= 16), ("from 64 MB up", lambda k: s[k]["mb"] >= 64)):
        vals = [r for k, r in rope if pred(k)]
        if vals:
            out.append(f"- fused RoPE + write against the same work as two kernels, {label}, graph: **{min(vals):.2f}x .. "
                       f"{max(vals):.2f}x** faster")
    return out


def ab_tables(a, b):
    """Rows of both runs, grouped: (label, rows, worst speed, rows slower beyond noise)."""
    groups = collections.OrderedDict()
    for key in sorted(set(a) & set(b), key=lambda k: (k[0], k[8], k[1], k[4], k[6] * k[7], k[5], k)):
        if key[3] != "graph":
            continue
        size = "decode (1-16 tokens)" if key[5] <= 16 else ("from 64 MB" if a[key]["mb"] >= 64 else "mid sizes")
        label = f"{key[0]} {key[8] or 'grid'} {key[4]} {size}"
        speed = a[key]["us"] / b[key]["us"]
        noise = max(a[key]["spread"], b[key]["spread"], MIN_NOISE)
        groups.setdefault(label, []).append((key, a[key], b[key], speed, noise, speed < 1 - noise))
    return groups


def ab_report(a, b):
    groups = ab_tables(a, b)
    lines = ["| rows | count | B speed / A: min | median | max | slower beyond noise |", "|---|---:|---:|---:|---:|---:|"]
    total = slower = 0
    for label, rows in groups.items():
        speeds = [r[3] for r in rows]
        n_slow = sum(r[5] for r in rows)
        total += len(rows)
        slower += n_slow
        lines.append(f"| {label} | {len(rows)} | {min(speeds):.3f} | {statistics.median(speeds):.3f} | {max(speeds):.3f} | {n_slow} |")
    detail = ["| row | A us | B us | B speed / A | noise |", "|---|---:|---:|---:|---:|"]
    for rows in groups.values():
        for key, ra, rb, speed, noise, slow in rows:
            name = "/".join(str(x) for x in key[:5]) + f"/{key[5]}x{key[6]}x{key[7]}" + (f"/{key[8]}" if key[8] else "")
            detail.append(f"| {name}{' **slower**' if slow else ''} | {ra['us']:.2f} | {rb['us']:.2f} | {speed:.3f} | {noise:.1%} |")
    return lines, detail, total, slower


def plot(s, path, gpu):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 5))
    colors = {"copy": "k", "kvcast": "tab:blue", "kvcast_ip": "tab:cyan", "sglang": "tab:red", "legacy": "tab:olive"}
    for variant, color in colors.items():
        for (h, d), style in (((8, 128), "-o"), ((32, 256), ":s")):
            pts = sorted((r["mb"], r["mb"] / (r["copy_us"] if variant == "copy" else r["us"]) * 1e3)
                         for k, r in s.items()
                         if k[0] == ("kvcast" if variant == "copy" else variant) and k[1] == "bf16" and k[3] == "graph"
                         and k[4] == "cold" and k[8] == "" and (k[6], k[7]) == (h, d))
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, color=color, markersize=3,
                        label=f"{variant} {h}x{d}")
    ax.set_xscale("log")
    ax.set_xlabel("MB moved (inputs read + codes written + slots)")
    ax.set_ylabel("GB/s")
    ax.set_title(f"bf16 -> fp8 E4M3, cold L2, CUDA-graph replay — {gpu}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("runs", nargs="*")
    p.add_argument("--md")
    p.add_argument("--png")
    p.add_argument("--readme")
    p.add_argument("--save")
    p.add_argument("--ab", nargs="*", default=[], help="A's runs; with RUN files, an A/B section in --md against them")
    p.add_argument("--vs", nargs="*", default=[])
    p.add_argument("--torch", nargs="*", default=[], help="tools/torch_scales.py's output, for the scale-kind tables")
    p.add_argument("--torch-read", nargs="*", default=[], help="tools/torch_read.py's output, for the read's pool table")
    args = p.parse_args()
    torch_rows = load_torch(args.torch)
    torch_pool = load_torch_pool(args.torch_read)

    if args.ab and not args.runs:
        _, ra, _ = load(args.ab)
        _, rb, _ = load(args.vs)
        lines, detail, total, slower = ab_report(summarize(ra), summarize(rb))
        print("\n".join(lines))
        print(f"\nA/B: {total} rows, {slower} with B slower than A beyond noise (max of both spreads, >= {MIN_NOISE:.0%})")
        if args.md:
            pathlib.Path(args.md).write_text("\n".join(lines + [""] + detail) + "\n")
        return

    context, rows, kept = load(args.runs)
    s = summarize(rows)
    gpu = context.get("gpu", "unknown GPU")
    date = context.get("date", "")
    reps = max((r["n"] for r in s.values()), default=0)
    head = f"GPU: **{gpu}**, {date}; medians of {reps} runs a row."
    summary = summary_lines(s) + scales_summary(s, torch_rows) + scale_axis_summary(s) + read_summary(s, torch_pool)
    if args.save:
        pathlib.Path(args.save).write_text(json.dumps({"context": context, "benchmarks": kept}, separators=(",", ":")))
    if args.md:
        parts = [f"# kvcast benchmark results\n\n{head}\n\nGenerated by `tools/bench_report.py`. Times per call, medians; "
                 "copy = a device-to-device copy of the same bytes, measured in the same row.\n", *summary, ""]
        for dtype in ("bf16", "f16"):
            for cache in ("cold", "hot"):
                parts += [f"## {dtype} -> E4M3, {cache} L2, CUDA-graph replay\n", grid_table(s, dtype, "graph", cache,
                          [(t, h, d) for t in (1, 4, 16, 64, 256, 512, 1024, 2048, 8192, 32768)
                           for (h, d) in ((8, 128), (32, 128), (8, 256), (32, 256))]), ""]
        for cache in ("cold", "hot"):
            parts += [f"## RoPE fused with the block-level write (bf16, {cache} L2, graph)\n", rope_table(s, cache), ""]
        for cache in ("cold", "hot"):
            parts += [f"## Scale kinds (bf16 -> E4M3, {cache} L2, graph; times in us; MB and copy count the per-(token, head) "
                      "scales)\n", scales_table(s, cache, torch_rows if cache == "hot" else {}), ""]
        parts += ["## Scale kinds from 64 MB, slots a random permutation against sorted (bf16 -> E4M3, cold L2, graph; times "
                  "in us)\n", scales_sorted_table(s), ""]
        parts += ["## The amax output zeroed before every call (bf16 -> E4M3, cold L2, graph; times in us, each behind the same "
                  "8-byte memset node)\n", scales_zeroed_table(s), ""]
        for cache in ("cold", "hot"):
            parts += [f"## The scale axis: bf16 8x128 -> E4M3 with each scale pair ({cache} L2, graph)\n",
                      scale_axis_table(s, cache), ""]
        for cache in ("cold", "hot"):
            parts += [f"## The read: gathers to bf16 from E4M3 ({cache} L2, graph; MB and copy count codes, scales, outputs, "
                      "indices)\n", read_table(s, cache), ""]
            parts += [f"## The read: SGLang #35291's pool, live rows against the whole pool ({cache} L2, graph)\n",
                      pool_table(s, cache, torch_pool), ""]
        if args.ab:
            _, ra, _ = load(args.ab)
            lines, detail, total, slower = ab_report(summarize(ra), summarize(rows))
            parts += ["## Same-call A/B: this run (B) against the files given with --ab (A)\n",
                      f"{total} rows, {slower} with B slower than A beyond noise (the larger of both sides' spreads "
                      f"over their runs, at least {MIN_NOISE:.0%}).\n", *lines, "", *detail, ""]
        pathlib.Path(args.md).write_text("\n".join(parts))
    if args.readme:
        text = pathlib.Path(args.readme).read_text()
        block = "\n".join([head, "", "bf16 -> E4M3, cold L2, CUDA-graph replay, scales 0.0173/0.0229 (K/V):", "",
                           grid_table(s, "bf16", "graph", "cold"), "",
                           *summary])
        text = re.sub(r"(<!-- bench:begin -->\n).*?(\n<!-- bench:end -->)", lambda m: m.group(1) + block + m.group(2), text,
                      flags=re.S)
        pathlib.Path(args.readme).write_text(text)
    if args.png:
        plot(s, args.png, gpu)
    if not (args.md or args.readme or args.png or args.save):
        print(head)
        print(grid_table(s, "bf16", "graph", "cold"))
        print("\n".join(summary))


if __name__ == "__main__":
    main()
