"""kvcast's Python face, without a GPU: the package imports; every argument error raises
ValueError with kvcast's message before anything runs (the tensors are NumPy arrays: kvcast's
validation runs on host arrays, then the device check refuses them); the torch custom ops'
fake implementations, where torch is importable. On a GPU machine, the same file also checks
the results against the host-side definition (CUDA tensors, where torch and a GPU are there).

    python3 python/tests/test_kvcast.py        (or pytest)
"""
import sys

import numpy as np

import kvcast

try:
    import torch
except ImportError:
    torch = None


def skip(reason):
    """Skips the calling test: pytest's skip under pytest, a reported outcome when run as a script."""
    if "pytest" in sys.modules:
        sys.modules["pytest"].skip(reason)
    return f"skipped ({reason})"


def raises(fn, *words):
    """fn() raises ValueError whose message holds every one of `words`."""
    try:
        fn()
    except ValueError as e:
        message = str(e)
        missing = [w for w in words if w not in message]
        assert not missing, f"message {message!r} lacks {missing}"
        return message
    raise AssertionError(f"no ValueError (expected one with {words})")


def step(tokens=4, heads=2, dim=16, rows=8):
    rng = np.random.default_rng(0)
    k = rng.standard_normal((tokens, heads, dim), dtype=np.float32)
    v = rng.standard_normal((tokens, heads, dim), dtype=np.float32)
    k_cache = np.zeros((rows, heads, dim), np.uint8)
    v_cache = np.zeros((rows, heads, dim), np.uint8)
    loc = np.arange(tokens, dtype=np.int64)
    return k, v, k_cache, v_cache, loc


def test_imports():
    assert kvcast.__version__.count(".") == 2, kvcast.__version__


def test_write_errors_carry_kvcasts_messages():
    k, v, kc, vc, loc = step()
    # kvcast's own rules, from the arrays' shapes and strides.
    overlapping = np.lib.stride_tricks.as_strided(k, shape=(4, 2, 16), strides=(16 * 4, 16 * 4, 4))  # tokens on heads
    raises(lambda: kvcast.write(overlapping, None, kc, None, loc=loc), "kvcast.write", "in_token_stride (16) < 32")
    raises(lambda: kvcast.write(k, v, kc, kc, loc=loc), "k_out and v_out are the same pointer")
    raises(lambda: kvcast.write(k, v, kc, vc, loc=loc, mult=0), "mult (0) must be in [1, 2^31-1]")
    raises(lambda: kvcast.write(k, v, kc, vc, loc=loc, scale_kind="per_head"), "k_head_scales is null while k is given")
    raises(lambda: kvcast.write(k, v, kc, vc, loc=loc, scale_kind="per_token_head",
                                k_scales_out=np.zeros((8, 2), np.float32), v_scales_out=np.zeros((8, 2), np.float32),
                                arithmetic="input_precision"), "per_token_head computes its scales in fp32 arithmetic")
    # The tensors' kinds, before kvcast's rules.
    raises(lambda: kvcast.write(k.astype(np.int32), None, kc, None), "k: expected bfloat16, float16 or float32")
    raises(lambda: kvcast.write(k, None, kc.astype(np.float32), None), "k_out: expected 1-byte elements")
    raises(lambda: kvcast.write(k[0], None, kc, None), "k: expected 3 dimensions")
    raises(lambda: kvcast.write(k, None, kc, None, loc=loc[:3]), "loc: 3 slots for 4 tokens")
    raises(lambda: kvcast.write(k, None, kc, None, format="e3m4"), "format: 'e3m4' is not")
    raises(lambda: kvcast.write(k, None, kc.reshape(2, 4, 2, 16), None, layout="nhd", scale_kind="bogus"), "scale_kind: 'bogus'")
    # A valid call on host arrays: refused for the device alone, nothing written.
    raises(lambda: kvcast.write(k, v, kc, vc, loc=loc, k_scale=0.5, v_scale=2.0), "k: must be on a CUDA device")
    assert not kc.any() and not vc.any()
    raises(lambda: kvcast.downcast_fp8(k, v, kc, vc, np.ones(1, np.float32), np.ones(1, np.float32), loc),
           "must be on a CUDA device")


def test_read_errors_carry_kvcasts_messages():
    k, v, kc, vc, loc = step()
    table = np.zeros((2, 3), np.int32)
    cu = np.array([0, 2, 4], np.int32)
    raises(lambda: kvcast.read(kc, vc, k, v, loc=loc, block_table=table, cu_seq_lens=cu, layout="flat"),
           "loc and block_table are both given")
    raises(lambda: kvcast.read(kc, vc, k, v, block_table=table, cu_seq_lens=cu[:2]), "cu_seq_lens: expected batch + 1 = 3")
    raises(lambda: kvcast.read(kc, vc, k, k, loc=loc), "k and v are the same pointer")
    raises(lambda: kvcast.read(kc, None, k, v, loc=loc), "v is given while v_cache is null")
    raises(lambda: kvcast.read(kc.reshape(2, 4, 2, 16), None, k, None, block_table=table, cu_seq_lens=cu, layout="nhd",
                               page_size=3), "cache_rows (8) is not a multiple of page_size (3)")
    raises(lambda: kvcast.read(kc, None, k, None, loc=loc, scale_kind="per_token_head", k_scales=np.zeros((8, 2), np.float32)),
           "k_cache: must be on a CUDA device")
    raises(lambda: kvcast.read(kc, None, k.astype(np.float64), None), "k: expected bfloat16, float16 or float32")
    # An empty batch, its [0, max_pages] table empty, is valid: only the device check refuses it.
    for empty in (np.zeros((0, 0), np.int32), np.zeros((0, 3), np.int32)):
        raises(lambda: kvcast.read(kc, None, k, None, block_table=empty, cu_seq_lens=cu[:1]), "k_cache: must be on a CUDA device")


def test_nvfp4_errors_carry_kvcasts_messages():
    k, v, _, _, loc = step(dim=32)
    codes, sf = np.zeros((8, 2, 16), np.uint8), np.zeros((8, 2, 2), np.uint8)
    write = lambda **kw: kvcast.write(k, None, kw.pop("codes", codes), None, loc=loc, format="nvfp4", **kw)
    raises(lambda: write(), "k_out: format 'nvfp4' needs its block scales too")
    raises(lambda: write(codes=np.zeros((8, 2, 32), np.uint8), k_block_scales_out=sf),
           "k_out: its last dimension must be head_dim / 2 (two E2M1 codes a byte) (16), got 32")
    raises(lambda: write(k_block_scales_out=np.zeros((8, 2, 4), np.uint8)), "k_block_scales_out: its last dimension must be head_dim / 16")
    raises(lambda: write(k_block_scales_out=np.zeros((4, 2, 2), np.uint8)), "k_block_scales_out: 4 rows of 2 heads, its codes 8 of 2")
    raises(lambda: write(k_block_scales_out=sf, arithmetic="input_precision"), "format 'nvfp4' computes in fp32 arithmetic")
    raises(lambda: kvcast.write(k, None, np.zeros((8, 2, 32), np.uint8), None, loc=loc, arithmetic="fast_math"),
           "'fast_math' is NVFP4's engine-compatible mode")
    raises(lambda: write(k_block_scales_out=sf, k_scale=0.0), "must be finite and > 0")
    raises(lambda: write(k_block_scales_out=sf, scale_kind="per_head", k_head_scales=np.ones(2, np.float32)), "nvfp4")
    k24 = np.ones((4, 2, 24), np.float32)
    raises(lambda: kvcast.write(k24, None, np.zeros((8, 2, 12), np.uint8), None, loc=loc, format="nvfp4"),
           "head_dim (24) must be a multiple of 16 with format nvfp4")
    raises(lambda: kvcast.write(k, None, np.zeros((8, 2, 32), np.uint8), None, loc=loc, k_block_scales_out=sf),
           "k_block_scales_out: block scales belong to format 'nvfp4'")
    raises(lambda: kvcast.write(k, None, np.zeros((8, 2, 16), np.uint8), None, loc=loc),
           "k_out: its last dimension must be head_dim (32), got 16")  # fp8: no write past the cache's rows
    # Valid calls on host arrays: refused for the device alone, nothing written.
    raises(lambda: write(k_block_scales_out=sf, k_scale=0.02), "k: must be on a CUDA device")
    raises(lambda: write(k_block_scales_out=sf, k_scale=0.02, arithmetic="fast_math"), "k: must be on a CUDA device")
    out = np.zeros_like(k)
    raises(lambda: kvcast.read(codes, None, out, None, loc=loc, format="nvfp4"), "k_cache: format 'nvfp4' needs its block scales too")
    raises(lambda: kvcast.read(codes, None, out, None, loc=loc, format="nvfp4", k_block_scales=sf), "k_cache: must be on a CUDA device")
    assert not codes.any() and not sf.any() and not out.any()


def test_torch_fake_implementations():
    if torch is None:
        return skip("torch is not importable")
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        k = torch.empty(4, 2, 16, dtype=torch.bfloat16, device="cuda")
        cache = torch.empty(8, 2, 16, dtype=torch.uint8, device="cuda")
        loc = torch.empty(4, dtype=torch.int64, device="cuda")
        scale = torch.empty(1, dtype=torch.float32, device="cuda")
        out = torch.empty(4, 2, 16, dtype=torch.bfloat16, device="cuda")
        assert torch.ops.kvcast.downcast_fp8(k, k, cache, cache, scale, scale, loc) is None
        assert torch.ops.kvcast.write(k, None, cache, None, None, None, None, None, None, None, loc) is None
        assert kvcast.ops.write(k, None, cache, None, loc=loc, k_scale=scale) is None
        assert torch.ops.kvcast.read(cache, None, out, None, loc) is None
        try:
            kvcast.ops.write(k, None, cache, None, loc=loc[:3])
            raise AssertionError("the fake write took 3 slots for 4 tokens")
        except ValueError as e:
            assert "loc has (3,) slots for 4 tokens" in str(e)
    for name in ("downcast_fp8", "write", "read"):
        schema = getattr(torch.ops.kvcast, name).default._schema
        assert any(a.alias_info is not None and a.alias_info.is_write for a in schema.arguments), f"{name} mutates nothing"


def gpu():
    """torch and a CUDA device, or the reason there are none."""
    if torch is None:
        return "torch is not importable"
    if not torch.cuda.is_available():
        return "no CUDA device"
    return None


def divisor(scale):
    """A scale as a one-element CUDA tensor: torch divides by it with IEEE division (a Python
    number as divisor is multiplied by its reciprocal instead, which is not the same quotient)."""
    return torch.tensor([scale], dtype=torch.float32, device="cuda")


def test_gpu_write_then_read_match_torch():
    if gpu():
        return skip(gpu())
    torch.manual_seed(0)
    dev = "cuda"
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        k, v = (torch.randn(2, 37, 8, 128, device=dev) * 30).to(dtype)
        k_cache, v_cache = torch.full((2, 96, 8, 128), 0x5A, dtype=torch.uint8, device=dev)
        loc = torch.randperm(96, device=dev)[:37]
        loc[3] = -1  # padding: its row stays untouched
        kvcast.write(k, v, k_cache, v_cache, loc=loc, k_scale=0.37, v_scale=1.7)
        for x, cache, s in ((k, k_cache, 0.37), (v, v_cache, 1.7)):
            want = torch.full_like(cache, 0x5A)
            rows = loc >= 0
            want[loc[rows]] = (x[rows].float() / divisor(s)).clamp(-448, 448).to(torch.float8_e4m3fn).view(torch.uint8)
            assert torch.equal(cache, want), f"write, {dtype}"
        out = torch.full_like(k, 7.0)
        kvcast.read(k_cache, None, out, None, loc=loc, k_scale=0.37)
        want = (k_cache[loc.clamp(min=0)].view(torch.float8_e4m3fn).float() * 0.37).to(dtype)
        want[3] = 7.0
        assert torch.equal(out, want), f"read, {dtype}"  # codes of finite values: no NaN to compare


def test_gpu_scale_kinds_match_torch():
    """Per-(token, head) and per-head scales (heads fused in the dense kernel at head_dim 64 and
    128, apart at 576 per (token, head)) and amax equal #15's PyTorch expressions bit for bit,
    with fp8_max as a float32 tensor: IEEE division. (With a Python number, torch on CUDA
    multiplies by its reciprocal instead, which rounds some amax / 448 differently; counted and
    printed, not compared.)"""
    if gpu():
        return skip(gpu())
    torch.manual_seed(1)
    dev = "cuda"
    rounded_apart = 0
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        for dim in (64, 128, 576):
            x = (torch.randn(2, 37, 8, dim, device=dev) * 30).to(dtype)
            x[0, 5, 2] = 0  # an all-zero row-head: its scale is min_scale
            k, v = x
            loc = torch.randperm(96, device=dev)[:37]
            loc[3] = -1  # padding: its rows, scales and magnitudes are left out
            rows = loc >= 0
            caches = torch.full((2, 96, 8, dim), 0x5A, dtype=torch.uint8, device=dev)
            scales = torch.full((2, 96, 8), -1.0, device=dev)
            amax = torch.zeros(2, 1, device=dev)
            kvcast.write(k, v, caches[0], caches[1], loc=loc, scale_kind="per_token_head", k_scales_out=scales[0],
                         v_scales_out=scales[1], min_scale=1e-6, k_amax=amax[0], v_amax=amax[1])
            for t, cache, got_s, got_amax in zip((k, v), caches, scales, amax):
                a = t.float().abs().amax(-1)
                s = (a / divisor(448.0)).clamp(min=1e-6)
                rounded_apart += int(((a / 448.0).clamp(min=1e-6) != s).sum())
                q = (t.float() / s[..., None]).clamp(-448, 448).to(torch.float8_e4m3fn).view(torch.uint8)
                want, want_s = torch.full_like(cache, 0x5A), torch.full_like(got_s, -1.0)
                want[loc[rows]], want_s[loc[rows]] = q[rows], s[rows]
                assert torch.equal(cache, want), f"per (token, head) codes, {dtype} {dim}"
                assert torch.equal(got_s, want_s), f"per (token, head) scales, {dtype} {dim}"
                assert torch.equal(got_amax, t[rows].float().abs().amax().reshape(1)), f"amax, {dtype} {dim}"
            heads = torch.rand(2, 8, device=dev) + 0.05
            caches.fill_(0x5A)
            kvcast.write(k, v, caches[0], caches[1], loc=loc, scale_kind="per_head", k_head_scales=heads[0], v_head_scales=heads[1])
            for t, cache, h in zip((k, v), caches, heads):
                q = (t.float() / h[:, None]).clamp(-448, 448).to(torch.float8_e4m3fn).view(torch.uint8)
                want = torch.full_like(cache, 0x5A)
                want[loc[rows]] = q[rows]
                assert torch.equal(cache, want), f"per head, {dtype} {dim}"
    print(f"  (amax / 448 with a Python number: {rounded_apart} of {3 * 3 * 2 * 37 * 8} scales rounded otherwise)")


def test_gpu_read_every_code_matches_torch_bit_for_bit():
    """Every fp8 code of both formats, NaNs included, read with several scales (0, inf and a
    subnormal among them) equals torch's (codes.view(fp8).float() * scale).to(T), bit for bit."""
    if gpu():
        return skip(gpu())
    codes = torch.arange(256, dtype=torch.uint8, device="cuda").view(2, 8, 16)
    bits = {torch.bfloat16: torch.int16, torch.float16: torch.int16, torch.float32: torch.int32}
    for fmt, (name, _) in FP8.items():
        for scale in (0.37, 1.0, 3.0, 0.0, float("inf"), 1e-40, 1e30):
            for dtype, as_int in bits.items():
                out = torch.full((2, 8, 16), 7.0, dtype=dtype, device="cuda")
                kvcast.read(codes, None, out, None, format=fmt, k_scale=torch.tensor([scale], device="cuda"))
                want = (codes.view(getattr(torch, name)).float() * torch.tensor([scale], device="cuda")).to(dtype)
                assert torch.equal(out.view(as_int), want.view(as_int)), f"{fmt} {dtype} scale {scale}"


def test_gpu_compile_and_graph_replay():
    if gpu():
        return skip(gpu())
    dev = "cuda"
    k = torch.randn(16, 8, 128, dtype=torch.bfloat16, device=dev)
    cache = torch.zeros(32, 8, 128, dtype=torch.uint8, device=dev)
    out = torch.zeros(16, 8, 128, dtype=torch.float32, device=dev)
    loc = torch.randperm(32, device=dev)[:16]
    scale = torch.tensor([0.5], device=dev)

    def want(s):
        codes = (k.float() / divisor(s)).clamp(-448, 448).to(torch.float8_e4m3fn)
        return codes.view(torch.uint8), codes.float() * s

    @torch.compile(fullgraph=True)
    def step(k, cache, out, loc, scale):
        kvcast.ops.write(k, None, cache, None, loc=loc, k_scale=scale)
        torch.ops.kvcast.read(cache, None, out, None, loc, k_scale=scale)
        return out.sum()

    step(k, cache, out, loc, scale)
    codes, values = want(0.5)
    assert torch.equal(cache[loc], codes) and torch.equal(out, values), "torch.compile"
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        kvcast.ops.write(k, None, cache, None, loc=loc, k_scale=scale)
        torch.ops.kvcast.read(cache, None, out, None, loc, k_scale=scale)
    scale.fill_(2.0)  # read when the kernels run: the replay takes it
    graph.replay()
    torch.cuda.synchronize()
    codes, values = want(2.0)
    assert torch.equal(cache[loc], codes) and torch.equal(out, values), "graph replay with a changed scale"

FP8 = {"e4m3": ("float8_e4m3fn", 448.0), "e5m2": ("float8_e5m2", 57344.0)}


def hostile(shape, dtype, scale, seed):
    """Random values across fp8's range for `scale`, with ±inf, ±max-ish, ±0 and ties sprinkled in
    (no NaN: torch and kvcast agree that NaN stays NaN, but not on its sign bit)."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(shape, device="cuda", generator=g) * torch.exp2(torch.randint(-12, 10, shape, device="cuda", generator=g))
    flat = x.view(-1)
    picks = torch.randint(0, flat.numel(), (64,), device="cuda", generator=g)
    specials = torch.tensor([float("inf"), -float("inf"), 0.0, -0.0, 1000.0, -1000.0, 448.0 * scale, 57344.0 * scale],
                            device="cuda")
    flat[picks] = specials.repeat(8)
    return x.to(dtype)


def test_gpu_fp32_mode_matches_torch_float8_casts():
    if gpu():
        return skip(gpu())
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        for fmt, (name, fmax) in FP8.items():
            for scale in (0.37, 1.0, 3.0, 0.0173):
                k = hostile((33, 4, 64), dtype, scale, seed=7)
                cache = torch.full((40, 4, 64), 0xA5, dtype=torch.uint8, device="cuda")
                loc = torch.randperm(40, device="cuda")[:33]
                kvcast.write(k, None, cache, None, loc=loc, format=fmt, k_scale=torch.tensor([scale], device="cuda"))
                want = torch.full_like(cache, 0xA5)
                want[loc] = (k.float() / divisor(scale)).clamp(-fmax, fmax).to(getattr(torch, name)).view(torch.uint8)
                assert torch.equal(cache, want), f"fp32 mode, {dtype}, {fmt}, scale {scale}"


def sglang_reference(x, scale, mult, offset, loc, rows):
    """SGLang's downcast_fp8 in torch: inv = T(1) / T(scale), x * inv in T, clamp to ±448, E4M3."""
    s = torch.tensor([scale], device="cuda").to(x.dtype)
    y = (x * (1 / s)).clamp(-448, 448).to(torch.float8_e4m3fn).view(torch.uint8)
    out = torch.full((rows,) + tuple(x.shape[1:]), 0xA5, dtype=torch.uint8, device="cuda")
    out[loc * mult + offset] = y
    return out


def test_gpu_downcast_fp8_matches_sglang_numerics():
    if gpu():
        return skip(gpu())
    for dtype in (torch.bfloat16, torch.float16):
        for scale in (0.5, 2.0, 0.1):
            for mult, offset in ((1, 0), (2, 1)):
                tokens, heads, dim = 45, 8, 128
                rows = 2 * tokens * mult + offset
                k, v = hostile((tokens, heads, dim), dtype, scale, seed=1), hostile((tokens, heads, dim), dtype, scale, seed=2)
                k[0, 0, :4] = torch.tensor([1000.0, -1000.0, 448.0, -448.0], dtype=dtype)  # clamp at ±max
                loc = torch.randperm(2 * tokens, device="cuda")[:tokens]  # scattered
                k_out, v_out = (torch.full((rows, heads, dim), 0xA5, dtype=torch.uint8, device="cuda") for _ in range(2))
                k_scale, v_scale = torch.tensor([scale], device="cuda"), torch.tensor([scale], device="cuda")
                kvcast.downcast_fp8(k, v, k_out, v_out, k_scale, v_scale, loc, mult, offset)
                torch.ops.kvcast.downcast_fp8(k, v, k_out, v_out, k_scale, v_scale, loc, mult, offset)  # the same again
                assert torch.equal(k_out, sglang_reference(k, scale, mult, offset, loc, rows)), f"K {dtype} {scale} {mult}"
                assert torch.equal(v_out, sglang_reference(v, scale, mult, offset, loc, rows)), f"V {dtype} {scale} {mult}"
    k = torch.ones(4, 2, 16, dtype=torch.bfloat16, device="cuda")
    k_cache, v_cache = torch.zeros(2, 8, 2, 16, dtype=torch.uint8, device="cuda")
    one = torch.ones(1, device="cuda")
    bad = torch.tensor([0, 1, 2, 8], device="cuda")
    kvcast.downcast_fp8(k, k, k_cache, v_cache, one, one, bad)  # row 8 is past the cache: skipped, not written
    want = torch.zeros_like(k_cache)
    want[:3] = 0x38  # 1.0 in E4M3
    assert torch.equal(k_cache, want) and torch.equal(v_cache, want), "a slot outside the cache was not skipped"


def test_gpu_paged_layouts_match_index_by_index():
    if gpu():
        return skip(gpu())
    pages, block, heads, dim, tokens = 9, 16, 4, 64, 70
    for layout in ("nhd", "hnd"):
        for dtype in (torch.bfloat16, torch.float32):
            k = hostile((tokens, heads, dim), dtype, 0.5, seed=3)
            shape = (pages, block, heads, dim) if layout == "nhd" else (pages, heads, block, dim)
            cache = torch.full(shape, 0xA5, dtype=torch.uint8, device="cuda")
            loc = torch.randperm(pages * block, device="cuda")[:tokens]
            kvcast.write(k, None, cache, None, loc=loc, layout=layout, k_scale=0.5)
            codes = (k.float() / divisor(0.5)).clamp(-448, 448).to(torch.float8_e4m3fn).view(torch.uint8)
            want = torch.full_like(cache, 0xA5)
            for t, slot in enumerate(loc.tolist()):
                page, row = divmod(slot, block)
                if layout == "nhd":
                    want[page, row] = codes[t]
                else:
                    want[page, :, row] = codes[t]
            assert torch.equal(cache, want), f"write {layout} {dtype}"
            # Read it back through a page table: two sequences over shuffled pages, the second from token 5.
            table = torch.randperm(pages, device="cuda", dtype=torch.int32).view(1, -1).repeat(2, 1)
            lens = [40, 50]
            cu = torch.tensor([0, lens[0], lens[0] + lens[1] - 5], dtype=torch.int32, device="cuda")
            starts = torch.tensor([0, 5], dtype=torch.int32, device="cuda")
            out = torch.full((int(cu[-1]), heads, dim), 9.0, dtype=dtype, device="cuda")
            kvcast.read(cache, None, out, None, block_table=table, cu_seq_lens=cu, seq_starts=starts, layout=layout, k_scale=0.5)
            want_out = torch.empty_like(out)
            i = 0
            for b in range(2):
                for j in range(int(starts[b]), int(starts[b]) + int(cu[b + 1] - cu[b])):
                    page, row = int(table[b, j // block]), j % block
                    c = cache[page, row] if layout == "nhd" else cache[page, :, row]
                    want_out[i] = (c.view(torch.float8_e4m3fn).float() * 0.5).to(dtype)
                    i += 1
            assert torch.equal(out, want_out), f"read {layout} {dtype}"


E2M1 = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)


def nvfp4_reference(x, g):
    """kvcast's exact NVFP4 (README): per block of 16, sf = e4m3(amax / (6 g)), q = e2m1(x / (sf g)),
    rounded to nearest, ties to the even code, saturated; a block whose sf is 0 keeps the signs.
    Returns the packed codes [.., dim / 2] (low nibble first) and the sf bytes [.., dim / 16]."""
    xf = x.float().unflatten(-1, (-1, 16))
    sf = (xf.abs().amax(-1) / (6 * g)).to(torch.float8_e4m3fn)
    d = sf.float() * g
    q = xf / d[..., None]
    a = q.abs()
    code = torch.zeros_like(a, dtype=torch.uint8)
    for i, m in enumerate((0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0)):  # midpoints: up past one, or onto it toward an even code
        code += ((a > m) | ((a == m) & ((i + 1) % 2 == 0))).to(torch.uint8)
    zero_block = (sf.float() == 0)[..., None]
    code = torch.where(zero_block, torch.zeros_like(code), code) | (torch.signbit(torch.where(zero_block, xf, q)).to(torch.uint8) << 3)
    code = code.flatten(-2)
    return code[..., 0::2] | (code[..., 1::2] << 4), sf.view(torch.uint8)


def nvfp4_values(packed, sf, g):
    """(e2m1 · float(sf)) · g in fp32, [.., dim]."""
    table = torch.tensor(E2M1 + tuple(-v for v in E2M1), device=packed.device)
    codes = torch.stack((packed & 0xF, packed >> 4), -1).flatten(-2).long()
    e = table[codes].unflatten(-1, (-1, 16))
    return ((e * sf.view(torch.float8_e4m3fn).float()[..., None]) * g).flatten(-2)


def test_gpu_nvfp4_write_and_read_match_torch():
    """NVFP4 (exact mode) against its definition in torch, flat and in HND pages with a separate
    block-scale tensor (FlashInfer's kv_cache_sf), device and host global scales; then read back."""
    if gpu():
        return skip(gpu())
    tokens, heads, dim, pages, block = 37, 4, 64, 6, 8
    rows = pages * block
    gen = torch.Generator(device="cuda").manual_seed(17)
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        x = (torch.randn(tokens, heads, dim, device="cuda", generator=gen) * 4).to(dtype)
        x[1, 0, :16] = 0  # a zero block: sf 0, zero codes
        x[2, 1, 16:32] *= 1e-4  # a small one: a subnormal sf
        g = (x.float().abs().amax() / (448 * 6)).reshape(1)
        loc = torch.randperm(rows, device="cuda")[:tokens]
        loc[5] = -1  # padding: untouched
        live = loc >= 0
        want_codes, want_sf = nvfp4_reference(x, g)
        for layout in ("flat", "hnd"):
            for g_arg in (g, float(g)):  # read on the device when the kernel runs, or fixed at launch
                shape = (rows, heads) if layout == "flat" else (pages, heads, block)
                codes = torch.full(shape + (dim // 2,), 0xA5, dtype=torch.uint8, device="cuda")
                sf = torch.full(shape + (dim // 16,), 0x5A, dtype=torch.uint8, device="cuda")
                kvcast.write(x, None, codes, None, loc=loc, format="nvfp4", layout=layout, k_scale=g_arg, k_block_scales_out=sf)
                # As [rows, heads, ..] views to compare with the reference, row by row.
                flat = (lambda t: t) if layout == "flat" else (lambda t: t.transpose(1, 2).reshape(rows, heads, -1))
                got_codes, got_sf = flat(codes), flat(sf)
                want_c, want_s = torch.full_like(got_codes, 0xA5), torch.full_like(got_sf, 0x5A)
                want_c[loc[live]], want_s[loc[live]] = want_codes[live], want_sf[live]
                assert torch.equal(got_codes, want_c), f"codes, {dtype}, {layout}"
                assert torch.equal(got_sf, want_s), f"block scales, {dtype}, {layout}"
                out = torch.full_like(x, 7.0)
                kvcast.read(codes, None, out, None, loc=loc, format="nvfp4", layout=layout, k_scale=g_arg, k_block_scales=sf)
                want_out = nvfp4_values(want_codes, want_sf, g).to(dtype)
                want_out[~live] = 7.0
                assert torch.equal(out, want_out), f"read back, {dtype}, {layout}"


if __name__ == "__main__":
    tests = [(n, f) for n, f in sorted(globals().items()) if n.startswith("test_") and callable(f)]
    skipped = 0
    for name, fn in tests:
        outcome = fn()
        skipped += outcome is not None
        print(f"{outcome or 'ok'}: {name}")
    print(f"kvcast python: {len(tests) - skipped} passed, {skipped} skipped (torch {'importable' if torch else 'not importable'})")
    sys.exit(0)
