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
        assert torch.ops.kvcast.write(k, None, cache, None, loc) is None
        assert torch.ops.kvcast.read(cache, None, out, None, loc) is None
        try:
            torch.ops.kvcast.write(k, None, cache, None, loc[:3])
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
            want[loc[rows]] = (x[rows].float() / s).clamp(-448, 448).to(torch.float8_e4m3fn).view(torch.uint8)
            assert torch.equal(cache, want), f"write, {dtype}"
        out = torch.full_like(k, 7.0)
        kvcast.read(k_cache, None, out, None, loc=loc, k_scale=0.37)
        want = (k_cache[loc.clamp(min=0)].view(torch.float8_e4m3fn).float() * 0.37).to(dtype)
        want[3] = 7.0
        assert torch.equal(out, want), f"read, {dtype}"  # codes of finite values: no NaN to compare


def test_gpu_compile_and_graph_replay():
    if gpu():
        return skip(gpu())
    dev = "cuda"
    k = torch.randn(16, 8, 128, dtype=torch.bfloat16, device=dev)
    cache = torch.zeros(32, 8, 128, dtype=torch.uint8, device=dev)
    loc = torch.arange(16, device=dev)
    scale = torch.tensor([0.5], device=dev)

    @torch.compile(fullgraph=True)
    def step(k, cache, loc, scale):
        torch.ops.kvcast.write(k, None, cache, None, loc, k_scale=scale)
        return cache.sum()

    step(k, cache, loc, scale)
    want = (k.float() / 0.5).clamp(-448, 448).to(torch.float8_e4m3fn).view(torch.uint8)
    assert torch.equal(cache[:16], want)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        torch.ops.kvcast.write(k, None, cache, None, loc, k_scale=scale)
    scale.fill_(2.0)  # read when the kernel runs: the replay takes it
    graph.replay()
    torch.cuda.synchronize()
    want = (k.float() / 2.0).clamp(-448, 448).to(torch.float8_e4m3fn).view(torch.uint8)
    assert torch.equal(cache[:16], want)


if __name__ == "__main__":
    tests = [(n, f) for n, f in sorted(globals().items()) if n.startswith("test_") and callable(f)]
    skipped = 0
    for name, fn in tests:
        outcome = fn()
        skipped += outcome is not None
        print(f"{outcome or 'ok'}: {name}")
    print(f"kvcast python: {len(tests) - skipped} passed, {skipped} skipped (torch {'importable' if torch else 'not importable'})")
    sys.exit(0)
