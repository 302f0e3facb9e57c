"""Run code under numba-cuda's simulator in a child process and get numpy arrays back.

``NUMBA_ENABLE_CUDASIM`` is read when numba.cuda is first imported, so a test process that has
imported the real numba.cuda cannot switch: the simulator runs in a fresh interpreter. Arrays go
both ways as ``.npy`` files in a temporary directory (``allow_pickle=False``), never pickles.

The simulator runs each CUDA thread as a Python thread (~0.4 ms a thread, 20-40 ms a barrier)
and has no warp intrinsics (``shfl_*_sync``, ``syncwarp``): keep shapes tiny.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]  # the repository: ``tests.cuda`` imports there
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*\Z")

# The child: load the inputs, call ``target(inputs) -> {name: array}``, save the results.
_CHILD = textwrap.dedent("""
    import importlib, os, sys, warnings
    import numpy as np
    warnings.simplefilter("ignore", RuntimeWarning)  # nan/inf specials warn in numpy scalars
    d = sys.argv[1]
    inputs = {f[3:-4]: np.load(os.path.join(d, f), allow_pickle=False)
              for f in sorted(os.listdir(d)) if f.startswith("in_") and f.endswith(".npy")}
    try:
        from numba.cuda.core import config
    except ImportError:
        from numba.core import config
    if not config.ENABLE_CUDASIM:
        sys.exit("numba.cuda did not start in simulator mode")
    kind, target = sys.argv[2], sys.argv[3]
    if kind == "func":
        module, _, name = target.partition(":")
        fn = getattr(importlib.import_module(module), name)
    else:
        namespace = {"__name__": "__sim__"}
        exec(compile(open(target).read(), "<simulated snippet>", "exec"), namespace)
        fn = namespace["main"]
    outputs = fn(inputs)
    for key, value in outputs.items():
        np.save(os.path.join(d, "out_" + key + ".npy"), np.asarray(value), allow_pickle=False)
""")


class SimulatorError(AssertionError):
    """The simulated child failed or timed out; the message holds its stderr."""


def run_in_simulator(target: str, inputs: dict | None = None, *, timeout: float = 120.0,
                     env: dict | None = None) -> dict:
    """Run ``target(inputs)`` under ``NUMBA_ENABLE_CUDASIM=1`` in a child and return its
    ``{name: array}`` result. ``target`` is ``"package.module:function"`` or Python source that
    defines ``main(inputs)``. ``run_in_simulator("tests.cuda.kernels:run_cases", {"x": x})``."""
    inputs = inputs or {}
    with tempfile.TemporaryDirectory(prefix="tj_sim_") as d:
        for key, value in inputs.items():
            _check_name(key)
            np.save(os.path.join(d, f"in_{key}.npy"), np.asarray(value), allow_pickle=False)
        if re.fullmatch(r"[\w.]+:\w+", target):
            kind = "func"
        else:
            kind, source = "source", target
            target = os.path.join(d, "snippet.py")
            Path(target).write_text(textwrap.dedent(source))
        child_env = {**os.environ, **(env or {}), "NUMBA_ENABLE_CUDASIM": "1",
                     "PYTHONPATH": os.pathsep.join(
                         [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(
                             os.pathsep) if p])}
        cmd = [sys.executable, "-c", _CHILD, d, kind, target]
        try:
            proc = subprocess.run(cmd, cwd=ROOT, env=child_env, capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise SimulatorError(f"simulated {target} ran past {timeout:.0f} s; its stderr:\n"
                                 f"{_tail(e.stderr)}") from None
        if proc.returncode != 0:
            raise SimulatorError(f"simulated {target} failed (exit {proc.returncode}); its "
                                 f"stderr:\n{_tail(proc.stderr)}")
        return {f[4:-4]: np.load(os.path.join(d, f), allow_pickle=False)
                for f in sorted(os.listdir(d)) if f.startswith("out_") and f.endswith(".npy")}


def _check_name(key: str) -> None:
    if not _NAME.match(key) or ".." in key:
        raise ValueError(f"array name {key!r}: use letters, digits, '_', '-' and '.'")


def _tail(text, limit: int = 6000) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    text = text or "(empty)"
    return text if len(text) <= limit else "...\n" + text[-limit:]
