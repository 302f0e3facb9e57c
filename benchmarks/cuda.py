"""CUDA backend benchmarks, for a machine with an NVIDIA GPU (docs/gpu.md): compiled graphs
(``lower(graph, target="cuda")`` run by ``runtime.cuda_runner``) against the device-to-device
copy bandwidth measured in the same run, cuBLAS, and torch eager / torch.compile when torch
with CUDA is importable. Prints medians and ratios. About 3-5 minutes on an H200 (the first
call of each graph compiles its kernels); without a GPU it says so and exits.

    python benchmarks/cuda.py            # everything
    python benchmarks/cuda.py matmul     # sections whose name contains "matmul"
    NUMBA_ENABLE_CUDASIM=1 python benchmarks/cuda.py --tiny   # a smoke run of the code paths
"""

from __future__ import annotations

import os
import statistics
import sys
import time

# NOTE: this file is named cuda.py: as a script its directory comes first on sys.path, where
# it would shadow the CUDA Python bindings' ``cuda`` package that numba-cuda imports
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import numpy as np  # noqa: E402

TINY = "--tiny" in sys.argv  # sizes for the simulator: checks the code, measures nothing


def size(n: int, tiny: int) -> int:
    return tiny if TINY else n


def _exit_without_gpu() -> None:
    import tracejit.cuda
    if not tracejit.cuda.is_available() or (tracejit.cuda.is_simulator() and not TINY):
        why = tracejit.cuda.unavailable_reason() or "the simulator is on"
        print(f"benchmarks/cuda.py needs an NVIDIA GPU: {why}")
        sys.exit(0)


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


def timed(fn, sync, repeat: int = 20, inner: int = 5) -> float:
    """Median seconds per call of ``fn`` (each sample: ``inner`` calls, then a sync)."""
    if TINY:
        repeat, inner = 1, 1
    fn()
    sync()
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        sync()
        samples.append((time.perf_counter() - t0) / inner)
    return statistics.median(samples)


def compiled(fn, *arrays):
    """A CUDA runner for ``fn`` traced on host copies of ``arrays``."""
    import tracejit as tj
    from tracejit.codegen import lower
    from tracejit.passes.fuse import fuse
    from tracejit.runtime.cuda_runner import compile_cuda

    tensors = [tj.from_numpy(np.array(a)) for a in arrays]
    graph = fuse(tj.trace(fn, backend="interpret").graph(*tensors))
    program = lower(graph, target="cuda")
    return compile_cuda(program), program


def line(name: str, seconds: float, extra: str = "") -> None:
    print(f"  {name:<44} {seconds * 1e3:9.3f} ms  {extra}")


# ---------------------------------------------------------------------------- sections


def gelu(x):
    return 0.5 * x * (1 + (0.79788456 * (x + 0.044715 * x ** 3)).tanh())


def chain(a, b, c):  # the 10-op chain of tests/codegen/test_cpu.py
    x = (a * b + c).tanh() * 0.5 - a
    return (x.exp() / (b + 2.0)).clamp(min=0.1).sqrt() * c


def bench_elementwise(cuda, torch) -> None:
    print("elementwise (GB/s counts each input read and the output written once)")
    n = size(16 << 20, 64)
    src = cuda.to_device(np.ones(n, np.float32))
    dst = cuda.device_array(n, np.float32)
    copy = timed(lambda: dst.copy_to_device(src), cuda.synchronize)
    line("device-to-device copy, 64 MiB, numba", copy, f"{2 * n * 4 / copy / 1e9:7.1f} GB/s")
    try:  # cupy's copy kernel: numba's copy_to_device waits for each copy to end
        import cupy
        csrc, cdst = cupy.asarray(src), cupy.asarray(dst)
        ccopy = timed(lambda: cupy.copyto(cdst, csrc), cuda.synchronize)
        line("device-to-device copy, 64 MiB, cupy", ccopy, f"{2 * n * 4 / ccopy / 1e9:7.1f} GB/s")
        copy = min(copy, ccopy)
    except ImportError:
        pass
    copy_bw = 2 * n * 4 / copy
    print(f"  the roof: {copy_bw / 1e9:.1f} GB/s")
    rng = np.random.default_rng(0)
    cases = [("gelu, 16M f32", gelu, [rng.standard_normal(n, np.float32)]),
             ("10-op chain, 4096x4096 f32", chain,
              [rng.standard_normal((size(4096, 4), size(4096, 8)), np.float32) for _ in range(3)])]
    for name, fn, host in cases:
        run, _ = compiled(fn, *host)
        dev = [cuda.to_device(a) for a in host]
        t = timed(lambda: run(*dev), cuda.synchronize)
        bw = (len(host) + 1) * host[0].nbytes / t
        line(f"tracejit {name}", t, f"{bw / 1e9:7.1f} GB/s = {bw / copy_bw:5.2f} of copy")
        if torch is not None:
            tt = [torch.from_numpy(a).cuda() for a in host]
            te = timed(lambda: fn(*tt), torch.cuda.synchronize)
            line(f"torch eager {name}", te, f"tracejit is {te / t:5.2f}x faster")
            try:
                tc = torch.compile(fn)
                tcs = timed(lambda: tc(*tt), torch.cuda.synchronize)
                line(f"torch.compile {name}", tcs, f"tracejit is {tcs / t:5.2f}x faster")
            except Exception as e:  # no triton, ...
                print(f"  torch.compile unavailable: {type(e).__name__}: {e}")


def bench_rows(cuda, torch) -> None:
    import tracejit.nn.functional as F
    print("row reductions (one block per row)")
    rng = np.random.default_rng(0)
    for rows, cols in ((4096, 1024), (16384, 4096)) if not TINY else ((2, 16),):
        x = rng.standard_normal((rows, cols), np.float32)
        w, b = np.ones(cols, np.float32), np.zeros(cols, np.float32)
        for name, fn, args in (("softmax", lambda x: x.softmax(-1), [x]),
                               ("layer_norm", lambda x, w, b: F.layer_norm(x, (cols,), w, b),
                                [x, w, b])):
            run, _ = compiled(fn, *args)
            dev = [cuda.to_device(a) for a in args]
            t = timed(lambda: run(*dev), cuda.synchronize)
            bw = 2 * x.nbytes / t
            extra = f"{bw / 1e9:7.1f} GB/s"
            if torch is not None:
                tx = torch.from_numpy(x).cuda()
                tw, tb = torch.from_numpy(w).cuda(), torch.from_numpy(b).cuda()
                tf = (lambda: torch.softmax(tx, -1)) if name == "softmax" else \
                    (lambda: torch.nn.functional.layer_norm(tx, (cols,), tw, tb))
                te = timed(tf, torch.cuda.synchronize)
                extra += f", torch eager {te * 1e3:.3f} ms ({te / t:5.2f}x)"
            line(f"{name} {rows}x{cols}", t, extra)


def bench_matmul(cuda, torch) -> None:
    from tracejit.runtime.cuda_launch import TILE, tiles
    print("matmul f32 4096^3")
    n = size(4096, 8)
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), np.float32) for _ in range(2))
    run, program = compiled(lambda a, b: a @ b, a, b)
    da, db = cuda.to_device(a), cuda.to_device(b)
    flops = 2 * n ** 3
    t = timed(lambda: run(da, db), cuda.synchronize, repeat=10, inner=2)
    line("tracejit matmul (cuBLAS when cupy is present)", t, f"{flops / t / 1e12:6.1f} TFLOP/s")
    tiled = run.module.matmul_f32[(tiles(n), tiles(n), 1), (TILE, TILE)]
    out = cuda.device_array((n, n), np.float32)
    tt = timed(lambda: tiled(da, db, out, n, n, n), cuda.synchronize, repeat=5, inner=1)
    line("tracejit tiled kernel", tt, f"{flops / tt / 1e12:6.1f} TFLOP/s")
    ref = None
    try:
        import cupy
        ca, cb = cupy.asarray(da), cupy.asarray(db)
        ref = timed(lambda: ca @ cb, cupy.cuda.Device().synchronize, repeat=10, inner=2)
        line("cupy (cuBLAS)", ref, f"{flops / ref / 1e12:6.1f} TFLOP/s")
    except ImportError:
        pass
    if torch is not None:
        ta, tb = torch.from_numpy(a).cuda(), torch.from_numpy(b).cuda()
        torch.backends.cuda.matmul.allow_tf32 = False  # compare float32 with float32
        tr = timed(lambda: ta @ tb, torch.cuda.synchronize, repeat=10, inner=2)
        line("torch (cuBLAS, no TF32)", tr, f"{flops / tr / 1e12:6.1f} TFLOP/s")
        ref = ref or tr
    if ref:
        print(f"  tiled kernel / cuBLAS time: {tt / ref:5.1f}x")


def bench_overhead(cuda, torch) -> None:
    print("host overhead of a compiled 3-op graph on 16 elements")
    x = np.ones(16, np.float32)
    many = 1 if TINY else 200
    run, program = compiled(lambda x: ((x + 1).relu() * 2,), x)
    dx = cuda.to_device(x)
    t = timed(lambda: run(dx), lambda: None, repeat=20, inner=many)
    line("call, no sync (Python + launches)", t, f"{len(program.kernels)} kernel(s)")
    ts = timed(lambda: (run(dx), cuda.synchronize()), lambda: None, repeat=20, inner=many)
    line("call + synchronize", ts)
    if not TINY:  # where the call's time goes: one launch, one allocation
        from tracejit.runtime.cuda_launch import THREADS
        from tracejit.runtime.cuda_launcher import Launcher
        from tracejit.runtime.cuda_runner import allocator
        disp = getattr(run.module, program.kernels[0]).dispatcher
        out = cuda.device_array(16, np.float32)
        numba_launch = disp[1, THREADS]
        tl = timed(lambda: numba_launch(dx, out, 16), lambda: None, repeat=20, inner=many)
        line("  one launch, numba's kernel[grid, block]", tl)
        fast = Launcher(disp, (1, THREADS))
        tf = timed(lambda: fast(dx, out, 16), lambda: None, repeat=20, inner=many)
        line("  one launch, tracejit's launcher", tf, f"{tl / tf:5.2f}x fewer µs than numba's")
        np.testing.assert_array_equal(out.copy_to_host(), np.full(16, 4, np.float32))
        ta = timed(lambda: allocator.empty((16,), np.float32), lambda: None, repeat=20,
                   inner=many)
        line("  allocator.empty((16,), float32)", ta)
        tn = timed(lambda: cuda.device_array(16, np.float32), lambda: None, repeat=20,
                   inner=many)
        line("  numba's cuda.device_array(16, float32)", tn)
    import tracejit as tj
    f = tj.trace(lambda x: (x + 1).relu() * 2)
    tx_ = tj.ones(16, device="cuda")
    tt = timed(lambda: f(tx_), lambda: None, repeat=20, inner=many)
    line("traced call on a CUDA tensor, no sync", tt, "(tj.trace: guards, fast path, Tensor)")
    if torch is not None:
        tx = torch.ones(16, device="cuda")
        te = timed(lambda: ((tx + 1).relu() * 2), lambda: None, repeat=20, inner=many)
        line("torch eager, 3 ops, no sync", te)


def _mlp(cuda):
    """The MLP step compiled from a function (``run`` on device arrays ``dev``) and as users
    write it: modules, backward() and an optimizer, traced whole (``train_step(bx, by)``)."""
    import tracejit as tj
    import tracejit.nn.functional as F

    def step(x, y, w1, b1, w2, b2):
        def loss(w1, b1, w2, b2):
            return F.cross_entropy((x @ w1 + b1).relu() @ w2 + b2, y)
        grads = tj.grad(loss, argnums=(0, 1, 2, 3))(w1, b1, w2, b2)
        return tuple(p - 0.1 * g for p, g in zip((w1, b1, w2, b2), grads))

    rng = np.random.default_rng(0)
    batch, d_in, hidden = size(256, 4), size(784, 6), size(256, 5)
    host = [rng.standard_normal((batch, d_in), np.float32),
            rng.integers(0, 10, batch).astype(np.int64),
            (rng.standard_normal((d_in, hidden)) * 0.05).astype(np.float32),
            np.zeros(hidden, np.float32),
            (rng.standard_normal((hidden, 10)) * 0.05).astype(np.float32),
            np.zeros(10, np.float32)]
    run, program = compiled(step, *host)
    dev = [cuda.to_device(a) for a in host]
    model = tj.nn.Sequential(tj.nn.Linear(d_in, hidden), tj.nn.ReLU(),
                             tj.nn.Linear(hidden, 10)).cuda()
    opt = tj.optim.SGD(model.parameters(), lr=0.1)

    @tj.trace
    def train_step(x, y):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss
    bx, by = tj.from_numpy(host[0]).cuda(), tj.from_numpy(host[1]).cuda()
    return host, run, program, dev, lambda: train_step(bx, by)


def bench_mlp(cuda, torch) -> None:
    print("MLP 784-256-10 training step, batch 256 (forward, backward, SGD)")
    host, run, program, dev, train = _mlp(cuda)
    t = timed(lambda: run(*dev), cuda.synchronize)
    line("tracejit", t, f"{len(program.kernels)} kernels, host round trips: "
                        f"{program.host_round_trips or 'none'}")
    tm = timed(train, cuda.synchronize)
    line("tracejit, nn + SGD traced whole", tm)
    if torch is not None:
        tx, ty, *params = [torch.from_numpy(a).cuda() for a in host]
        params = [p.requires_grad_() for p in params]

        def torch_step():
            w1, b1, w2, b2 = params
            loss = torch.nn.functional.cross_entropy((tx @ w1 + b1).relu() @ w2 + b2, ty)
            grads = torch.autograd.grad(loss, params)
            return [p.detach() - 0.1 * g for p, g in zip(params, grads)]
        te = timed(torch_step, torch.cuda.synchronize)
        line("torch eager", te, f"tracejit is {te / t:5.2f}x faster")


def bench_host(cuda, torch) -> None:
    """Where the host time of the MLP step goes (cProfile, the functions with most time of
    their own); only when asked for: ``python benchmarks/cuda.py host``."""
    import cProfile
    import pstats
    print("host time of the MLP step, compiled call and traced whole (cProfile, 200 calls)")
    _, run, _, dev, train = _mlp(cuda)
    for name, fn in (("compiled call", lambda: run(*dev)), ("traced whole", train)):
        fn(), fn()
        cuda.synchronize()
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(1 if TINY else 200):
            fn()
        prof.disable()
        cuda.synchronize()
        print(f"-- {name}")
        pstats.Stats(prof).sort_stats("tottime").print_stats(18 if not TINY else 3)


SECTIONS = {"elementwise": bench_elementwise, "rows": bench_rows, "matmul": bench_matmul,
            "overhead": bench_overhead, "mlp": bench_mlp, "host": bench_host}
OPT_IN = {"host"}  # run only when named


def main(argv) -> None:
    _exit_without_gpu()
    from numba import cuda
    torch = _torch()
    name = getattr(cuda.get_current_device(), "name", "the simulator")
    name = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
    print(f"device: {name}; torch: {'yes' if torch is not None else 'no'}")
    wanted = [a for a in argv[1:] if not a.startswith("--")] or list(set(SECTIONS) - OPT_IN)
    for name, fn in SECTIONS.items():
        if any(w in name for w in wanted):
            t0 = time.perf_counter()
            fn(cuda, torch)
            print(f"  ({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main(sys.argv)
