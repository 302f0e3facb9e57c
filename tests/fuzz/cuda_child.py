"""The CUDA row of the differential tests, run in ONE simulator child (tests/cuda/sim.py):
each program ``inputs["programs"]`` holds (their reprs, one per line block) is traced on CUDA
tensors and called twice, the first call tracing and the second running the compiled CUDA
kernels; its outputs and its input tensors as the call left them come back as host arrays,
with the runner every specialization got (a silent fallback to the interpreter must fail)."""

from __future__ import annotations

import math
import time
import traceback
import warnings

import numpy as np

from tests.cuda.traced_cases import _text

SEPARATOR = "\n#--- next program\n"


def _programs(inputs):
    """(index, a function making the program) for each program sent, with the
    constants and random draws of the programs made on CUDA; tracejit's warnings (a fallback
    to the interpreter) are errors."""
    from . import program as prog

    warnings.filterwarnings("error", message="tracejit")
    prog._DEVICE = "cuda"
    namespace = {n: getattr(prog, n) for n in prog.__all__}
    namespace.update(nan=math.nan, inf=math.inf, np=np)
    texts = bytes(inputs["programs"]).decode().split(SEPARATOR)
    return [(k, lambda t=t: eval(t, namespace)) for k, t in enumerate(texts)]  # noqa: S307


def run(inputs) -> dict:
    import tracejit as tj

    from .executors import SEED

    res = {}
    for k, make in _programs(inputs):
        t0 = time.perf_counter()
        try:
            p = make()  # the parent's own reprs
            f = tj.trace(p.function())
            for _ in range(2):
                tj.manual_seed(SEED)
                args = [a.to("cuda") for a in p.make_args()]
                out = f(*args)
            outs = [out] if p.bare else list(out)
            for j, o in enumerate(outs):
                res[f"{k}.out{j}"] = o.detach().cpu().numpy() if isinstance(o, tj.Tensor) \
                    else np.asarray(o)
            for j, a in enumerate(args):
                res[f"{k}.in{j}"] = a.detach().cpu().numpy()
            res[f"{k}.runners"] = _text(" ".join(
                f"{s.compiled.device}:{type(s.runner).__name__}" for s in f.specs()))
        except Exception as e:  # noqa: BLE001 - the parent reports it with the program
            res[f"{k}.error"] = _text(f"{type(e).__name__}: {e}\n{traceback.format_exc()}")
        res[f"{k}.seconds"] = np.array(time.perf_counter() - t0)
    return res


def run_grads(inputs) -> dict:
    """The gradient programs ``inputs["programs"]`` holds, on CUDA tensors: the backward of a
    traced function called from eager code and ``tracejit.grad``, first and second call each
    (test_grad_differential.traced_gradients); every gradient comes back as a host array."""

    from . import program as prog
    from .test_grad_differential import traced_gradients

    warnings.filterwarnings("error", message="tracejit")  # a fallback to the interpreter fails
    namespace = {n: getattr(prog, n) for n in prog.__all__}
    namespace.update(nan=math.nan, inf=math.inf, np=np)
    prog._DEVICE = "cuda"
    res = {}
    for k, text in enumerate(bytes(inputs["programs"]).decode().split(SEPARATOR)):
        try:
            p = eval(text, namespace)  # noqa: S307 - the parent's own reprs
            for w, (what, loss, grads) in enumerate(traced_gradients(p, "cuda")):
                res[f"{k}.{w}.what"] = _text(what)
                if loss is not None:
                    res[f"{k}.{w}.loss"] = np.asarray(loss.item())
                for i, g in enumerate(grads):
                    if g is not None:
                        assert str(g.device) == "cuda:0", (what, i, g.device)
                        res[f"{k}.{w}.grad{i}"] = g.detach().cpu().numpy()
        except Exception as e:  # noqa: BLE001 - the parent reports it with the program
            res[f"{k}.error"] = _text(f"{type(e).__name__}: {e}\n{traceback.format_exc()}")
    return res
