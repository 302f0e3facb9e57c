"""Convolution: how conv2d should be lowered (im2col + BLAS against a direct numba loop nest),
and the CNN of examples/cnn.py eager vs compiled, all in one process on float32.

    python benchmarks/conv.py                  # both parts, 15 samples per cell
    python benchmarks/conv.py --only layers    # conv layers only: direct loop nest vs im2col
    python benchmarks/conv.py --only cnn --repeat 20
    python benchmarks/conv.py --threads 1      # numba, OpenMP and BLAS on one thread

``layers``: 3x3 convolutions (padding 1) at batch 32 as in examples/cnn.py, 3->32 channels on
32x32 and 32->64 on 16x16, computed four ways: tracejit eager (numpy im2col + np.matmul),
a hand-written numba im2col kernel + np.dot per image (what the compiler generates), tracejit
compiled ``F.conv2d`` (the generated unfold kernel + np.dot per image inside the njit entry),
and a hand-written direct loop nest in numba (parallel over images and output channels, the
innermost loop along a row so it vectorises). ``cnn``: the example's forward pass and its
training step (cross-entropy, backward, SGD with momentum) at batch 32, eager vs compiled.

Every variant is checked against numpy before it is timed. Times are medians over ``--repeat``
samples, taken round-robin across the variants of a row (one sample of each in turn, so a load
change on a shared machine hits them alike). Compare ratios, not absolute times.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

# compiled code is timed: compiles block (no interpreter tier), as before issue 13
os.environ.setdefault("TRACEJIT_SYNC_COMPILE", "1")

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "examples"):
    if str(path) not in sys.path:  # run from a checkout without installing
        sys.path.insert(0, str(path))

import numba  # noqa: E402

import tracejit as tj  # noqa: E402
import tracejit.nn.functional as F  # noqa: E402

LAYERS = [("conv 3->32, 32x32", 3, 32, 32), ("conv 32->64, 16x16", 32, 64, 16)]
BATCH = 32


# ---------------------------------------------------------------------------- hand-written numba
# NOTE: no cache=True here: a cached njit function calling a cached parallel one crashed
# (segfault) when loaded from numba's cache in a later run; these compile in about a second.


@numba.njit(parallel=True, fastmath={"reassoc", "contract"})
def direct_conv3x3(x, w, out):
    """out[n, o] = sum over c, i, j of w[o, c, i, j] * x[n, c, h + i - 1, w + j - 1] (pad 1)."""
    n_img, c_in, h, wd = x.shape
    c_out = w.shape[0]
    xp = np.zeros((n_img, c_in, h + 2, wd + 2), x.dtype)
    xp[:, :, 1:h + 1, 1:wd + 1] = x
    for p in numba.prange(n_img * c_out):
        n, o = p // c_out, p % c_out
        acc = np.zeros((h, wd), x.dtype)
        for c in range(c_in):
            for i in range(3):
                for j in range(3):
                    wv = w[o, c, i, j]
                    for r in range(h):
                        for q in range(wd):
                            acc[r, q] += wv * xp[n, c, r + i, q + j]
        out[n, o] = acc


@numba.njit(parallel=True)
def im2col3x3(x, cols):
    """cols[n, (c*3 + i)*3 + j, h*W + w] = x[n, c, h + i - 1, w + j - 1], zero outside."""
    n_img, c_in, h, wd = x.shape
    for p in numba.prange(n_img * c_in):
        n, c = p // c_in, p % c_in
        for i in range(3):
            for j in range(3):
                row = (c * 3 + i) * 3 + j
                for r in range(h):
                    hh = r + i - 1
                    for q in range(wd):
                        ww = q + j - 1
                        inside = 0 <= hh < h and 0 <= ww < wd
                        cols[n, row, r * wd + q] = x[n, c, hh, ww] if inside else 0.0


@numba.njit
def im2col_conv3x3(x, w2, cols, out):
    """im2col, then one BLAS matmul per image: out[n] = w2 @ cols[n] (w2: O x C*9)."""
    im2col3x3(x, cols)
    for n in range(x.shape[0]):
        np.dot(w2, cols[n], out[n])


# ---------------------------------------------------------------------------- timing


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def load_note() -> str:
    try:
        return "load average " + ", ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "load average unknown"


def sample(fn, target_s: float = 0.01) -> float:
    """Seconds per call, averaged over enough back-to-back calls to last ``target_s``."""
    t0 = time.perf_counter()
    fn()
    one = time.perf_counter() - t0
    calls = max(1, int(target_s / max(one, 1e-9)))
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls


def medians(variants: dict, repeat: int) -> dict:
    """Median seconds per call of each variant, sampled round-robin after one warm-up call."""
    for fn in variants.values():
        fn()
    times = {name: [] for name in variants}
    for _ in range(repeat):
        for name, fn in variants.items():
            times[name].append(sample(fn))
    return {name: statistics.median(ts) for name, ts in times.items()}


def ms(t: float) -> str:
    return f"{t * 1e3:.2f} ms"


def table(title: str, rows: list, columns: list, ratios: list) -> None:
    """A markdown table: one row per workload, medians, then each ratio a / b."""
    print(f"\n{title}\n")
    head = ["workload"] + columns + [f"{a} / {b}" for a, b in ratios]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name, result in rows:
        cells = [ms(result[c]) if c in result else "-" for c in columns]
        cells += [f"{result[a] / result[b]:.2f}x" if a in result and b in result else "-"
                  for a, b in ratios]
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


# ---------------------------------------------------------------------------- workloads


def layer_variants(c_in: int, c_out: int, size: int) -> dict:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, c_in, size, size)).astype(np.float32)
    w = (rng.standard_normal((c_out, c_in, 3, 3)) / np.sqrt(c_in * 9)).astype(np.float32)
    tx, tw = tj.tensor(x), tj.tensor(w)
    want = F.conv2d(tx, tw, padding=1).numpy()
    out = np.empty_like(want)
    cols = np.empty((BATCH, c_in * 9, size * size), np.float32)
    w2 = np.ascontiguousarray(w.reshape(c_out, -1))
    out_rows = out.reshape(BATCH, c_out, size * size)  # the same memory, one row per channel
    compiled = tj.trace(lambda x, w: F.conv2d(x, w, padding=1))
    compiled(tx, tw)
    variants = {
        "tracejit eager": lambda: F.conv2d(tx, tw, padding=1),
        "numba im2col + np.dot": lambda: im2col_conv3x3(x, w2, cols, out_rows),
        "tracejit compiled": lambda: compiled(tx, tw),
        "numba direct loops": lambda: direct_conv3x3(x, w, out),
    }
    for name, fn in variants.items():
        got = fn()
        got = out if got is None else got.numpy()
        if not np.allclose(got, want, rtol=1e-4, atol=1e-4):
            raise SystemExit(f"MISMATCH: {name} differs from numpy on conv {c_in}->{c_out}")
    return variants


def cnn_variants() -> list:
    """(name, {eager, compiled}): the example CNN's forward and its training step."""
    import cnn

    from tracejit import nn, optim

    images, labels = cnn.make_data(BATCH, seed=1)
    x, y = tj.tensor(images), tj.tensor(labels)
    rows = []

    model = cnn.build_model(0)
    forward = tj.trace(lambda x: model(x))
    with tj.no_grad():
        want = model(x).numpy()
        forward(x)
        if not np.allclose(forward(x).numpy(), want, rtol=1e-4, atol=1e-4):
            raise SystemExit("MISMATCH: compiled CNN forward differs from eager")

    def fwd_eager():
        with tj.no_grad():
            model(x)

    def fwd_compiled():
        with tj.no_grad():
            forward(x)

    rows.append((f"CNN forward, batch {BATCH}",
                 {"eager": fwd_eager, "compiled": fwd_compiled}))

    def make_step():
        net = cnn.build_model(0)
        opt = optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        loss_fn = nn.CrossEntropyLoss()

        def step(x, y):
            opt.zero_grad()
            loss = loss_fn(net(x), y)
            loss.backward()
            opt.step()
            return loss.detach()
        return step

    eager_step, traced_step = make_step(), tj.trace(make_step())
    for k in range(cnn.WARMUP):  # trace twice (momentum buffers appear), then compile
        a, b = eager_step(x, y).item(), traced_step(x, y).item()
        if not np.isclose(a, b, rtol=1e-4):
            raise SystemExit(f"MISMATCH: compiled CNN step {k} loss {b} != eager {a}")
    rows.append((f"CNN training step (SGD momentum), batch {BATCH}",
                 {"eager": lambda: eager_step(x, y), "compiled": lambda: traced_step(x, y)}))
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=15, help="samples per cell (default 15)")
    p.add_argument("--only", choices=("layers", "cnn"), default=None)
    p.add_argument("--threads", type=int, default=None,
                   help="limit numba, OpenMP and BLAS to N threads (re-executes with the "
                        "environment set); default: each library's own")
    args = p.parse_args(argv)
    if args.threads is not None and os.environ.get("TJ_BENCH_THREADS") != str(args.threads):
        # thread pools read these when their library loads, so set them and start again
        n = str(max(1, args.threads))
        env = dict(os.environ, TJ_BENCH_THREADS=str(args.threads), NUMBA_NUM_THREADS=n,
                   OMP_NUM_THREADS=n, OPENBLAS_NUM_THREADS=n, MKL_NUM_THREADS=n)
        sys.stdout.flush()
        os.execve(sys.executable, [sys.executable, os.path.abspath(__file__),
                                   *(sys.argv[1:] if argv is None else argv)], env)

    print(f"machine: {machine()}; numpy {np.__version__}, numba {numba.__version__} "
          f"({numba.config.NUMBA_NUM_THREADS} threads), tracejit {tj.__version__}")
    print(f"repeat {args.repeat}; {load_note()}", flush=True)
    if args.only in (None, "layers"):
        columns = ["tracejit eager", "numba im2col + np.dot", "tracejit compiled",
                   "numba direct loops"]
        rows = [(f"{name}, batch {BATCH}", medians(layer_variants(c_in, c_out, size),
                                                   args.repeat))
                for name, c_in, c_out, size in LAYERS]
        table("3x3 convolution, padding 1, float32 (medians)", rows, columns,
              [("numba direct loops", "numba im2col + np.dot"),
               ("tracejit compiled", "numba im2col + np.dot"),
               ("tracejit compiled", "tracejit eager")])
    if args.only in (None, "cnn"):
        rows = [(name, medians(variants, args.repeat)) for name, variants in cnn_variants()]
        table("examples/cnn.py (medians)", rows, ["eager", "compiled"],
              [("compiled", "eager")])


if __name__ == "__main__":
    main()
