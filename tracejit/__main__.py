"""``python -m tracejit demo``: the classic fit of y = sin(x) by a cubic (numpy, eager autograd,
compiled), then a compiled MLP training run with eager-vs-compiled step times.

``python -m tracejit cache info`` / ``cache clear``: the on-disk compile cache.

``python -m tracejit show|run|dot|svg|bench FILE``: exported files (tracejit/export/cli.py)."""

from __future__ import annotations

import argparse
import math
import time

import numpy as np


def polyfit_numpy(steps: int = 2000, lr: float = 1e-6, log=None, curve=None):
    """The tutorial's numpy version, gradients written by hand (the reference). ``curve``: a
    list that gets (step, loss) every 50 steps."""
    x = np.linspace(-math.pi, math.pi, 2000, dtype=np.float32)
    y = np.sin(x)
    rng = np.random.default_rng(0)
    a, b, c, d = (np.float32(v) for v in rng.standard_normal(4))
    for t in range(steps):
        y_pred = a + b * x + c * x ** 2 + d * x ** 3
        loss = float(np.square(y_pred - y).sum())
        if log and t % 500 == 499:
            log(t + 1, loss)
        if curve is not None and t % 50 == 0:
            curve.append((t, loss))
        g = 2.0 * (y_pred - y)
        a -= lr * g.sum()
        b -= lr * (g * x).sum()
        c -= lr * (g * x ** 2).sum()
        d -= lr * (g * x ** 3).sum()
    return loss, (a, b, c, d)


def polyfit_eager(steps: int = 2000, lr: float = 1e-6, log=None, curve=None):
    """The same fit with tracejit tensors and autograd (eager)."""
    import tracejit as tj

    x = tj.linspace(-math.pi, math.pi, 2000)
    y = x.sin()
    rng = np.random.default_rng(0)
    params = [tj.tensor(float(v), requires_grad=True) for v in rng.standard_normal(4)]
    a, b, c, d = params
    for t in range(steps):
        y_pred = a + b * x + c * x ** 2 + d * x ** 3
        loss = ((y_pred - y) ** 2).sum()
        if log and t % 500 == 499:
            log(t + 1, loss.item())
        if curve is not None and t % 50 == 0:
            curve.append((t, loss.item()))
        loss.backward()
        with tj.no_grad():
            for p in params:
                p -= lr * p.grad
                p.grad = None
    return loss.item(), tuple(p.item() for p in params)


def polyfit_compiled(steps: int = 2000, lr: float = 1e-6, log=None, curve=None):
    """The same loop with the whole step (forward, backward, update) traced and compiled."""
    import tracejit as tj

    x = tj.linspace(-math.pi, math.pi, 2000)
    y = x.sin()
    rng = np.random.default_rng(0)
    params = [tj.tensor(float(v), requires_grad=True) for v in rng.standard_normal(4)]
    a, b, c, d = params

    @tj.trace
    def step(x, y):
        loss = ((a + b * x + c * x ** 2 + d * x ** 3 - y) ** 2).sum()
        loss.backward()
        with tj.no_grad():
            for p in params:
                p -= lr * p.grad
                p.grad = None
        return loss.detach()

    for t in range(steps):
        loss = step(x, y)
        if log and t % 500 == 499:
            log(t + 1, loss.item())
        if curve is not None and t % 50 == 0:
            curve.append((t, loss.item()))
    return loss.item(), tuple(p.item() for p in params)


def _median_step_ms(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3


def mlp_training(steps: int = 200, batch: int = 256, log=print):
    """A 784-256-10 MLP trained with SGD on synthetic data, eager and compiled. Returns (losses,
    seconds of the first 3 compiled-step calls, eager and compiled ms per step, seconds from
    the first call until compiled code runs)."""
    import tracejit as tj
    from tracejit import nn, optim
    from tracejit.utils import progress

    rng = np.random.default_rng(0)
    centers = rng.standard_normal((10, 784)).astype(np.float32)
    labels = rng.integers(0, 10, batch * 4)
    data = centers[labels] * 0.1 + rng.standard_normal((batch * 4, 784)).astype(np.float32)
    batches = [(tj.tensor(data[i:i + batch]), tj.tensor(labels[i:i + batch]))
               for i in range(0, len(data), batch)]

    def make():
        tj.manual_seed(0)
        model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
        opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        loss_fn = nn.CrossEntropyLoss()

        def step(x, y):
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            return loss.detach()
        return step

    eager_step = make()
    compiled_step = tj.trace(make())
    t0 = time.perf_counter()
    for k in range(3):  # traces, then runs on the interpreter while numba compiles (tiered)
        compiled_step(*batches[k % len(batches)])
    compile_s = time.perf_counter() - t0
    for k in range(3):
        eager_step(*batches[k % len(batches)])
    losses = []
    for k in progress(range(3, steps), desc="compiled MLP steps", leave=False):
        loss = compiled_step(*batches[k % len(batches)])
        if k % 10 == 0 or k == steps - 1:
            losses.append((k, loss.item()))
        if k % 50 == 0 or k == steps - 1:
            log(f"  step {k:4d}  loss {loss.item():.4f}")
    tj.wait_compiles()  # time compiled steps, not the interpreter's
    compiled_after_s = time.perf_counter() - t0
    x, y = batches[0]
    t_eager = _median_step_ms(lambda: eager_step(x, y), 20)
    t_compiled = _median_step_ms(lambda: compiled_step(x, y), 20)
    return losses, compile_s, t_eager, t_compiled, compiled_after_s


def demo(steps: int = 2000, mlp_steps: int = 200, plot: str | None = "tracejit-demo.png") -> None:
    """Both demos; ``plot``: where to save the loss curves as PNG (matplotlib), None for none."""
    curves: dict = {"numpy": [], "eager": [], "compiled": []}
    print("tracejit demo 1: fit y = sin(x) on 2000 points by a + b x + c x^2 + d x^3, lr 1e-6")
    t0 = time.perf_counter()
    np_loss, _ = polyfit_numpy(steps, curve=curves["numpy"])
    t_np = time.perf_counter() - t0
    t0 = time.perf_counter()
    loss, (a, b, c, d) = polyfit_eager(
        steps, log=lambda s, v: print(f"  step {s:5d}  loss {v:9.3f}"), curve=curves["eager"])
    t_eager = time.perf_counter() - t0
    polyfit_compiled(3)  # trace and compile once (numba's machine code is cached on disk)
    import tracejit as tj
    tj.wait_compiles()  # the timed run starts from the cached machine code
    t0 = time.perf_counter()
    c_loss, _ = polyfit_compiled(steps, curve=curves["compiled"])
    t_comp = time.perf_counter() - t0
    print(f"result: y = {a:.4f} + {b:.4f} x + {c:.4f} x^2 + {d:.4f} x^3")
    print(f"final loss: numpy hand-written {np_loss:.3f}, tracejit eager {loss:.3f}, "
          f"tracejit compiled {c_loss:.3f}")
    print(f"{steps} steps: numpy {t_np * 1e3:.0f} ms, tracejit eager {t_eager * 1e3:.0f} ms, "
          f"tracejit compiled {t_comp * 1e3:.0f} ms (compiled once beforehand)")
    print()
    print(f"tracejit demo 2: 784-256-10 MLP, SGD with momentum, batch 256, {mlp_steps} compiled "
          f"training steps")
    losses, compile_s, t_e, t_c, compiled_after_s = mlp_training(mlp_steps)
    print(f"first 3 calls (trace, then the interpreter while numba compiles in the "
          f"background): {compile_s:.1f} s; compiled code from {compiled_after_s:.1f}"
          f" s after the first call")
    print(f"training step, median: eager {t_e:.2f} ms, compiled {t_c:.2f} ms "
          f"({t_e / t_c:.1f}x)")
    if plot:
        print(plot_losses(plot, curves, losses))


def plot_losses(path: str, polyfit_curves: dict, mlp_losses: list) -> str:
    """Save the demos' loss curves as a PNG (matplotlib); returns the line the demo prints."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return "loss curves: not plotted (matplotlib is not installed: pip install " \
               "'tracejit[watch]')"
    import os
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    for (name, curve), style in zip(polyfit_curves.items(), ("-", "--", ":")):
        if curve:
            ax1.plot(*zip(*curve), style, label=name)
    ax1.set(title="demo 1: polyfit", xlabel="step", ylabel="loss", yscale="log")
    ax1.legend()
    if mlp_losses:
        ax2.plot(*zip(*mlp_losses), label="compiled")
    ax2.set(title="demo 2: MLP, SGD with momentum", xlabel="step", ylabel="cross-entropy")
    ax2.legend()
    fig.savefig(path, dpi=100)
    return f"loss curves: wrote {os.path.abspath(path)}"


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


def cache_command(action: str) -> int:
    """``cache info``: where the compile cache is, what it holds, its limit; ``cache clear``:
    delete tracejit's files in it."""
    import datetime
    import os

    from tracejit.runtime import cache

    if action == "info":
        i = cache.info()
        source = "TRACEJIT_CACHE_DIR" if os.environ.get("TRACEJIT_CACHE_DIR") else "default"
        state = ""
        if not i["exists"]:
            state = "  (not created yet)"
        elif not i["writable"]:
            state = "  (read-only: used as it is, new code goes to a temporary directory)"
        print(f"location: {i['location']} ({source}){state}")
        print(f"entries:  {i['entries']} compiled graphs, {i['files']} files")
        limit = ("unlimited" if i["limit_bytes"] is None else _mb(i["limit_bytes"]))
        print(f"size:     {_mb(i['bytes'])} (helpers {_mb(i['helpers_bytes'])}), "
              f"limit {limit} (TRACEJIT_CACHE_MAX_MB)")
        if i["oldest_use"] is not None:
            when = datetime.datetime.fromtimestamp(i["oldest_use"]).isoformat(" ", "seconds")
            print(f"oldest:   last used {when} (evicted first when over the limit)")
        return 0
    n, size, failed = cache.clear()
    print(f"deleted {n} files ({_mb(size)}) from {cache.cache_dir()}")
    if failed:
        print(f"could not delete {failed} files (read-only?)")
        return 1
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tracejit")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="train the polyfit example and print timings")
    p.add_argument("--steps", type=int, default=2000, help="polyfit steps")
    p.add_argument("--mlp-steps", type=int, default=200, help="MLP training steps")
    p.add_argument("--plot", default="tracejit-demo.png", metavar="PNG",
                   help="where to save the loss curves (matplotlib); 'none' for no plot")
    p = sub.add_parser("cache", help="show or clear the on-disk compile cache")
    p.add_argument("action", choices=["info", "clear"],
                   help="info: location, entries, size and limit; clear: delete compiled code")
    from tracejit.export import cli as export_cli

    export_cli.add_commands(sub)
    args = parser.parse_args(argv)
    if args.command in export_cli.COMMANDS:
        return export_cli.main(args)
    if args.command == "demo":
        demo(args.steps, args.mlp_steps, None if args.plot == "none" else args.plot)
    elif args.command == "cache":
        return cache_command(args.action)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
