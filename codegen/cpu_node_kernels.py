"""The CPU rendering of the kernels for single graph nodes that are not elementwise and so are
never fused: ``unfold`` / ``fold`` (im2col / col2im, behind conv2d and avg pooling),
``max_pool2d`` and its gradient, ``argmax`` / ``argmin`` along a dim, ``gather`` and
``scatter_add`` (cross-entropy and its gradient). Their plans (``codegen/kernel.py``
``plan_node_kernel``) hold the geometry; this module spells it as numba source.

Each node becomes one kernel, named after the op and the node (``unfold3``), that writes a result
array the entry function allocates. Structural attributes (kernel size, stride, padding, the dim)
are literals in the source; sizes are parameters the entry reads from its ``sz`` tuple, so a new
batch size gives the same source. As for fused kernels, a node traced at a size too small for
threads is emitted serial only, and a parallel one checks the size again at run time.
"""

from __future__ import annotations

import numpy as np

from tracejit import ops

from . import cpu  # NOTE: cpu imports this module too; only its attributes are used, at call time
from .kernel import KernelPlan


def source(plan: KernelPlan, parallel: bool) -> str:
    """The source of a node kernel's plan; ``parallel``: the domain is large enough for
    threads (a parallel kernel checks the size again at run time)."""
    return _RENDER[plan.kind](plan, parallel, cpu.generic_type)


def _source(name: str, params: list, comments: list, body, count: str, work: str,
            parallel: bool, before=()) -> str:
    """A kernel whose outer loop (``for p in ...(count)``) runs with ``numba.prange`` when
    ``work`` reaches PARALLEL_MIN, serially otherwise; ``body(pad)`` gives the loop's body."""
    lines = [f"@numba.njit(parallel={parallel}, cache=True, error_model='numpy')",
             f"def {name}({', '.join(params)}):"]
    lines += [f"    # {c}" for c in comments]
    lines += [f"    {b}" for b in before]
    if parallel:
        lines.append(f"    if {work} >= {cpu.PARALLEL_MIN}:")
        lines.append(f"        for p in numba.prange({count}):")
        lines += body(12)
        lines.append("    else:")
        lines.append(f"        for p in range({count}):")
        lines += body(12)
    else:
        lines.append(f"    for p in range({count}):")
        lines += body(8)
    return "\n".join(lines) + "\n"


def _affine(terms, const: int = 0) -> str:
    """Readable source for sum(var * coef) + const: ``oh * 2 + i - 1``, ``1 - j``."""
    plus = [v if c == 1 else f"{v} * {c}" for v, c in terms if c > 0]
    minus = [v if c == -1 else f"{v} * {-c}" for v, c in terms if c < 0]
    if const > 0:
        plus.append(str(const))
    elif const < 0:
        minus.append(str(-const))
    text = " + ".join(plus) or ("-" + minus.pop(0) if minus else "0")
    return " - ".join([text] + minus)


# ---------------------------------------------------------------------------- unfold / fold


class _Window:
    """The geometry of an unfold/fold plan: output position (oh, ow) and kernel tap (i, j)
    read input pixel (h, w) = (oh * sh + i * dh - ph, ow * sw + j * dw - pw)."""

    def __init__(self, a: dict):
        (self.kh, self.kw), (self.dh, self.dw) = a["kernel"], a["dilation"]
        (self.ph, self.pw), (self.sh, self.sw) = a["padding"], a["stride"]
        self.kk = self.kh * self.kw
        self.attrs = (f"kernel {a['kernel']}, dilation {a['dilation']}, padding {a['padding']}, "
                      f"stride {a['stride']}")

    def rows(self, pad: int) -> list:
        """Loops over the taps and output rows down to a valid input row ``h``."""
        s = " " * pad
        lines = [s + "n = p // C",
                 s + "c = p % C",
                 s + f"for i in range({self.kh}):",
                 s + f"    for j in range({self.kw}):",
                 s + f"        row = {_affine([('c', self.kk), ('i', self.kw), ('j', 1)])}",
                 s + "        for oh in range(OH):",
                 s + f"            h = {_affine([('oh', self.sh), ('i', self.dh)], -self.ph)}",
                 s + "            col = oh * OW"]
        return lines

    def column(self) -> str:
        return _affine([("ow", self.sw), ("j", self.dw)], -self.pw)


def _unfold(plan: KernelPlan, parallel: bool, describe) -> str:
    (x,), (out,) = plan.inputs, plan.outputs
    win = _Window(plan.facts)
    fill = cpu.literal(plan.facts["pad_value"], x.dtype)

    def body(pad):
        s = " " * pad
        lines = win.rows(pad)
        inner = s + " " * 12
        if win.ph:
            lines += [inner + "if h < 0 or h >= H:  # a padding row",
                      inner + "    for ow in range(OW):",
                      inner + f"        out[n, row, col + ow] = {fill}",
                      inner + "    continue"]
        lines.append(inner + "for ow in range(OW):")
        if not win.pw:  # every window fits horizontally
            return lines + [inner + f"    out[n, row, col + ow] = x[n, c, h, {win.column()}]"]
        # NOTE: one loop with a select vectorises; splitting it at the image's edges into three
        # loops (no test per element) measured 4-6x slower
        return lines + [inner + f"    w = {win.column()}",
                        inner + f"    out[n, row, col + ow] = x[n, c, h, w] if 0 <= w < W else "
                                f"{fill}"]

    comments = [f"%{out.id} unfold (im2col): {win.attrs}, pad value {fill}",
                f"x: {describe(x)} (N, C, H, W) -> out: {describe(out)} "
                f"(N, C*{win.kk}, OH*OW); out[n, (c*{win.kh} + i)*{win.kw} + j, oh*OW + ow] = "
                f"x[n, c, h, w]"]
    return _source(plan.name, ["x", "out", "N", "C", "H", "W", "OH", "OW"], comments, body,
                   "N * C", f"N * C * OH * OW * {win.kk}", parallel)


def _fold(plan: KernelPlan, parallel: bool, describe) -> str:
    (cols,), (out,) = plan.inputs, plan.outputs
    win = _Window(plan.facts)

    def body(pad):
        s = " " * pad
        # NOTE: each (n, c) plane belongs to one iteration, so the += never races
        lines = win.rows(pad)
        lines.insert(2, s + "out[n, c] = 0")
        inner = s + " " * 12
        if win.ph:
            lines += [inner + "if h < 0 or h >= H:  # a padding row: nothing lands in out",
                      inner + "    continue"]
        lines.append(inner + "for ow in range(OW):")
        if not win.pw:
            return lines + [inner + f"    out[n, c, h, {win.column()}] += cols[n, row, col + ow]"]
        return lines + [inner + f"    w = {win.column()}",
                        inner + "    if 0 <= w < W:  # else a padding column",
                        inner + "        out[n, c, h, w] += cols[n, row, col + ow]"]

    comments = [f"%{out.id} fold (col2im, overlapping windows add up): {win.attrs}",
                f"cols: {describe(cols)} (N, C*{win.kk}, OH*OW) -> out: {describe(out)} "
                f"(N, C, H, W)"]
    return _source(plan.name, ["cols", "out", "N", "C", "H", "W", "OH", "OW"], comments, body,
                   "N * C", f"N * C * OH * OW * {win.kk}", parallel)


# ---------------------------------------------------------------------------- max pooling


def _window_max(win: _Window, dtype, pad: int, track: bool) -> list:
    """Loops over the output positions of plane (n, c) down to the first maximum or NaN of
    each window (``best``; its tap ``at`` when ``track``): the order and ties of argmax over
    unfold's rows, whose padding taps hold the dtype's lowest value and so never win."""
    s = " " * pad
    low = cpu.literal(ops.pool_low(dtype), dtype)
    lines = [s + "n = p // C", s + "c = p % C"]
    if track:
        lines += [s + "for h in range(H):",
                  s + "    for w in range(W):",
                  s + "        out[n, c, h, w] = 0"]
    lines += [s + "for oh in range(OH):",
              s + "    for ow in range(OW):",
              s + f"        best = {low}"]
    t = s + " " * 8
    if track:
        lines.append(t + "at = 0")
    lines += [t + f"for k in range({win.kk}):",
              t + f"    h = {_affine([('oh', win.sh), (f'(k // {win.kw})', win.dh)], -win.ph)}",
              t + f"    w = {_affine([('ow', win.sw), (f'(k % {win.kw})', win.dw)], -win.pw)}"]
    if win.ph or win.pw:
        lines += [t + "    if h < 0 or h >= H or w < 0 or w >= W:  # a padding tap",
                  t + "        continue"]
    lines.append(t + "    v = x[n, c, h, w]")
    if np.dtype(dtype).kind == "f":  # the first NaN wins, as in torch
        lines += [t + "    if v != v:", t + "        best = v"]
        lines += [t + "        at = k"] if track else []
        lines.append(t + "        break")
    lines += [t + "    if v > best:", t + "        best = v"]
    lines += [t + "        at = k"] if track else []
    return lines


def _max_pool2d(plan: KernelPlan, parallel: bool, describe) -> str:
    (x,), (out,) = plan.inputs, plan.outputs
    win = _Window(plan.facts)

    def body(pad):
        return _window_max(win, x.dtype, pad, track=False) + [
            " " * (pad + 8) + "out[n, c, oh, ow] = best"]

    comments = [f"%{out.id} max_pool2d: {win.attrs}",
                f"x: {describe(x)} (N, C, H, W) -> out: {describe(out)} (N, C, OH, OW); the "
                f"first maximum (or NaN) of each window"]
    return _source(plan.name, ["x", "out", "N", "C", "H", "W", "OH", "OW"], comments, body,
                   "N * C", f"N * C * OH * OW * {win.kk}", parallel)


def _max_pool2d_grad(plan: KernelPlan, parallel: bool, describe) -> str:
    (g, x), (out,) = plan.inputs, plan.outputs
    win = _Window(plan.facts)

    def body(pad):
        t = " " * (pad + 8)
        h = _affine([("oh", win.sh), (f"(at // {win.kw})", win.dh)], -win.ph)
        w = _affine([("ow", win.sw), (f"(at % {win.kw})", win.dw)], -win.pw)
        lines = _window_max(win, x.dtype, pad, track=True) + [t + f"h = {h}", t + f"w = {w}"]
        if win.ph or win.pw:  # every tap of the window may be padding: then nothing lands
            return lines + [t + "if 0 <= h < H and 0 <= w < W:",
                            t + "    out[n, c, h, w] += g[n, c, oh, ow]"]
        return lines + [t + "out[n, c, h, w] += g[n, c, oh, ow]"]

    # NOTE: each (n, c) plane belongs to one iteration, so the += never races
    comments = [f"%{out.id} max_pool2d_grad: {win.attrs}",
                f"g: {describe(g)} (N, C, OH, OW), x: {describe(x)} (N, C, H, W) -> out: "
                f"{describe(out)}; each window's gradient goes to its first maximum (or NaN)"]
    return _source(plan.name, ["g", "x", "out", "N", "C", "H", "W", "OH", "OW"], comments, body,
                   "N * C", f"N * C * OH * OW * {win.kk}", parallel)


# ---------------------------------------------------------------------------- indexing


def _loops(dims: list, pad: int) -> tuple:
    """Nested serial loops ``for i{d} in range(n{d})`` inside the outer ``p`` loop, which
    stands for ``dims[0]``; returns (lines, indent of the body)."""
    lines = [" " * pad + f"i{dims[0]} = p"]
    for d in dims[1:]:
        lines.append(" " * pad + f"for i{d} in range(n{d}):")
        pad += 4
    return lines, pad


def _index(rank: int, at: dict) -> str:
    """``i0, k, i2``: loop indices, with the dims in ``at`` replaced."""
    return ", ".join(at.get(d, f"i{d}") for d in range(rank)) or "()"


def _argmax(plan: KernelPlan, parallel: bool, describe) -> str:
    (x,), (out,) = plan.inputs, plan.outputs
    rank = len(x.shape)
    dim = plan.facts["dim"]
    outer = [d for d in range(rank) if d != dim]
    better = ">" if plan.kind == "argmax" else "<"
    out_index = ", ".join(f"i{d}" if d != dim else "0" for d in range(rank)
                          if d != dim or plan.facts["keepdim"])
    is_float = x.dtype.kind == "f"

    def body(pad):
        lines, ipad = _loops(outer, pad)
        s = " " * ipad
        lines += [s + f"best = x[{_index(rank, {dim: '0'})}]",
                  s + "at = 0"]
        step = [f"for k in range(1, n{dim}):",
                f"    v = x[{_index(rank, {dim: 'k'})}]"]
        if is_float:  # numpy: the first NaN wins
            step += ["    if v != v:",
                     "        at = k",
                     "        break"]
        step += [f"    if v {better} best:",
                 "        best = v",
                 "        at = k"]
        if is_float:
            lines.append(s + "if best == best:")
            lines += [s + "    " + line for line in step]
        else:
            lines += [s + line for line in step]
        lines.append(s + f"out[{out_index}] = at")
        return lines

    dims = [f"n{d}" for d in range(rank)]
    comments = [f"%{out.id} {plan.kind} over dim {dim} (the first extreme wins, as numpy)",
                f"x: {describe(x)} -> out: {describe(out)}"]
    return _source(plan.name, ["x", "out"] + dims, comments, body, f"n{outer[0]}",
                   " * ".join(dims), parallel)


def _bounds_check(op: str, dim: int, rank: int) -> list:
    """Statements refusing an index outside ``[0, m)``. The exception carries the bad index and
    the size as arguments: numba raises with runtime values, but formatting them into the text
    (``str(int)`` inside @njit) costs about 2 s more compile time per kernel. The executor gives
    the user the reference interpreter's message instead (see ``runtime.executor``)."""
    # NOTE: a raise inside a prange loop makes numba run it serially: check the indices first.
    # The min and max are loops: index.min() / index.max() cost numba ~0.6 s more to compile
    if rank == 0:
        scan = ["    lo = index[()]", "    hi = lo"]
    else:
        first = ", ".join("0" for _ in range(rank))
        at = ", ".join(f"c{k}" for k in range(rank))
        scan = [f"    lo = index[{first}]", "    hi = lo"]
        scan += [" " * (4 + 4 * k) + f"for c{k} in range(index.shape[{k}]):"
                 for k in range(rank)]
        pad = " " * (4 + 4 * rank)
        # (comparisons, not min/max: each builtin is one more numba function to compile)
        scan += [pad + f"v = index[{at}]", pad + "lo = v if v < lo else lo",
                 pad + "hi = v if v > hi else hi"]
    return ["if index.size:", *scan,
            "    if lo < 0 or hi >= m:",
            f"        raise IndexError('{op}: index out of bounds for dimension {dim} "
            f"(index, size):', lo if lo < 0 else hi, m)"]


def _gather(plan: KernelPlan, parallel: bool, describe) -> str:
    (x, index), (out,) = plan.inputs, plan.outputs
    rank = len(index.shape)
    dim = plan.facts["dim"]

    at = _index(rank, {})
    read = _index(rank, {dim: f"index[{at}]"})

    def body(pad):
        lines, ipad = _loops(list(range(rank)), pad)
        return lines + [" " * ipad + f"out[{at}] = x[{read}]"]

    dims = [f"n{d}" for d in range(rank)]
    comments = [f"%{out.id} gather along dim {dim}: out[...] = x[..., index[...], ...]",
                f"x: {describe(x)}, index: {describe(index)} -> out: {describe(out)}"]
    return _source(plan.name, ["x", "index", "out"] + dims + ["m"], comments, body, "n0",
                   " * ".join(dims), parallel, before=_bounds_check("gather", dim, rank))


def _scatter_add(plan: KernelPlan, parallel: bool, describe) -> str:
    (x, index, src_var), (out,) = plan.inputs, plan.outputs
    rank = len(index.shape)
    dim = plan.facts["dim"]
    # NOTE: the parallel loop must not run along dim: two of its steps could add to one element
    order = [d for d in range(rank) if d != dim] + [dim]

    def body(pad):
        lines, ipad = _loops(order, pad)
        s = " " * ipad
        target = _index(rank, {dim: f"index[{_index(rank, {})}]"})
        return lines + [s + f"out[{target}] += src[{_index(rank, {})}]"]

    dims = [f"n{d}" for d in range(rank)]
    comments = [f"%{out.id} scatter_add along dim {dim}: out = x; "
                f"out[..., index[...], ...] += src[...]",
                f"x: {describe(x)}, index: {describe(index)}, src: {describe(src_var)} -> "
                f"out: {describe(out)}"]
    # the loop over dim is innermost: a rank-1 index has no parallel loop (its plan's work is 0)
    return _source(plan.name, ["x", "index", "src", "out"] + dims + ["m"], comments, body,
                   f"n{order[0]}", " * ".join(dims), parallel,
                   before=_bounds_check("scatter_add", dim, rank) + _copy_loops(len(out.shape)))


def _copy_loops(rank: int) -> list:
    """``out[...] = x`` as loops. NOTE: numba compiles the slice assignment through its generic
    broadcasting setitem, which took 5 of the 6 s of this kernel's compile (measured alone)."""
    if rank == 0:
        return ["out[()] = x[()]"]
    lines = [" " * 4 * k + f"for c{k} in range(out.shape[{k}]):" for k in range(rank)]
    at = ", ".join(f"c{k}" for k in range(rank))
    return lines + [" " * 4 * rank + f"out[{at}] = x[{at}]"]


_RENDER = {"unfold": _unfold, "fold": _fold, "max_pool2d": _max_pool2d,
           "max_pool2d_grad": _max_pool2d_grad, "argmax": _argmax, "argmin": _argmax,
           "gather": _gather, "scatter_add": _scatter_add}
