"""numba kernels for single graph nodes that are not elementwise and so are never fused:
``unfold`` / ``fold`` (im2col / col2im, behind conv2d and the poolings), ``argmax`` / ``argmin``
along a dim, ``gather`` and ``scatter_add`` (max pooling, cross-entropy and their gradients).

Each node becomes one kernel, named after the op and the node (``unfold3``), that writes a result
array the entry function allocates. Structural attributes (kernel size, stride, padding, the dim)
are literals in the source; sizes are parameters the entry reads from its ``sz`` tuple, so a new
batch size gives the same source. As for fused kernels, a node traced at a size too small for
threads is emitted serial only, and a parallel one checks the size again at run time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tracejit import ops
from tracejit.ir import Node

from . import cpu  # NOTE: cpu imports this module too; only its attributes are used, at call time


@dataclass
class NodeKernel:
    """A node's kernel: its source, and the sizes its call passes after the arrays."""

    name: str
    source: str
    sizes: list  # ints, in parameter order


def node_kernel(node: Node, parallel: bool, describe) -> NodeKernel | None:
    """The kernel computing ``node``, or None when it has none (it then runs through numpy).
    ``describe(var)`` gives a var's size-free type for the comments (``f32[n,1]``)."""
    make = _MAKERS.get(node.op)
    return None if make is None else make(node, parallel, describe)


def _work(node: Node) -> int:
    return int(np.prod(node.out.shape, dtype=np.int64))


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
    """The geometry of an unfold/fold node: output position (oh, ow) and kernel tap (i, j)
    read input pixel (h, w) = (oh * sh + i * dh - ph, ow * sw + j * dw - pw)."""

    def __init__(self, node: Node, image_shape):
        a = node.attr_dict
        (self.kh, self.kw), (self.dh, self.dw) = a["kernel"], a["dilation"]
        (self.ph, self.pw), (self.sh, self.sw) = a["padding"], a["stride"]
        self.kk = self.kh * self.kw
        self.oh, self.ow = ops._window_out(node.op, image_shape[2:], a["kernel"], a["dilation"],
                                           a["padding"], a["stride"])
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


def _unfold(node: Node, parallel: bool, describe) -> NodeKernel:
    x = node.inputs[0]
    n, c, h, w = x.shape
    win = _Window(node, x.shape)
    name = f"unfold{node.out.id}"
    pad_value = node.attr_dict.get("pad_value", 0.0)
    fill = cpu.literal(pad_value, x.dtype)

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

    comments = [f"%{node.out.id} unfold (im2col): {win.attrs}, pad value {fill}",
                f"x: {describe(x)} (N, C, H, W) -> out: {describe(node.out)} "
                f"(N, C*{win.kk}, OH*OW); out[n, (c*{win.kh} + i)*{win.kw} + j, oh*OW + ow] = "
                f"x[n, c, h, w]"]
    par = parallel and _work(node) >= cpu.PARALLEL_MIN
    src = _source(name, ["x", "out", "N", "C", "H", "W", "OH", "OW"], comments, body, "N * C",
                  f"N * C * OH * OW * {win.kk}", par)
    return NodeKernel(name, src, [n, c, h, w, win.oh, win.ow])


def _fold(node: Node, parallel: bool, describe) -> NodeKernel:
    cols = node.inputs[0]
    n, c, h, w = node.out.shape
    win = _Window(node, node.out.shape)
    name = f"fold{node.out.id}"

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

    comments = [f"%{node.out.id} fold (col2im, overlapping windows add up): {win.attrs}",
                f"cols: {describe(cols)} (N, C*{win.kk}, OH*OW) -> out: {describe(node.out)} "
                f"(N, C, H, W)"]
    par = parallel and int(np.prod(cols.shape, dtype=np.int64)) >= cpu.PARALLEL_MIN
    src = _source(name, ["cols", "out", "N", "C", "H", "W", "OH", "OW"], comments, body, "N * C",
                  f"N * C * OH * OW * {win.kk}", par)
    return NodeKernel(name, src, [n, c, h, w, win.oh, win.ow])


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


def _argmax(node: Node, parallel: bool, describe) -> NodeKernel | None:
    x = node.inputs[0]
    a = node.attr_dict
    if a["dim"] is None or len(x.shape) < 2:  # whole-array arg-reductions stay on numpy
        return None
    rank = len(x.shape)
    dim = ops.norm_dim(node.op, a["dim"], rank)
    outer = [d for d in range(rank) if d != dim]
    better = ">" if node.op == "argmax" else "<"
    out_index = ", ".join(f"i{d}" if d != dim else "0" for d in range(rank)
                          if d != dim or a["keepdim"])
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

    name = f"{node.op}{node.out.id}"
    dims = [f"n{d}" for d in range(rank)]
    comments = [f"%{node.out.id} {node.op} over dim {dim} (the first extreme wins, as numpy)",
                f"x: {describe(x)} -> out: {describe(node.out)}"]
    par = parallel and int(np.prod(x.shape, dtype=np.int64)) >= cpu.PARALLEL_MIN
    src = _source(name, ["x", "out"] + dims, comments, body, f"n{outer[0]}",
                  " * ".join(dims), par)
    return NodeKernel(name, src, list(x.shape))


def _bounds_check(op: str, dim: int) -> list:
    """Statements refusing an index outside ``[0, m)``. The exception carries the bad index and
    the size as arguments: numba raises with runtime values, but formatting them into the text
    (``str(int)`` inside @njit) costs about 2 s more compile time per kernel. The executor gives
    the user the reference interpreter's message instead (see ``runtime.executor``)."""
    # NOTE: a raise inside a prange loop makes numba run it serially: check the indices first
    return ["if index.size:",
            "    lo = index.min()",
            "    hi = index.max()",
            "    if lo < 0 or hi >= m:",
            f"        raise IndexError('{op}: index out of bounds for dimension {dim} "
            f"(index, size):', lo if lo < 0 else hi, m)"]


def _gather(node: Node, parallel: bool, describe) -> NodeKernel | None:
    x, index = node.inputs
    rank = len(index.shape)
    if rank == 0:
        return None
    dim = ops.norm_dim("gather", node.attr_dict["dim"], rank)

    at = _index(rank, {})
    read = _index(rank, {dim: f"index[{at}]"})

    def body(pad):
        lines, ipad = _loops(list(range(rank)), pad)
        return lines + [" " * ipad + f"out[{at}] = x[{read}]"]

    name = f"gather{node.out.id}"
    dims = [f"n{d}" for d in range(rank)]
    comments = [f"%{node.out.id} gather along dim {dim}: out[...] = x[..., index[...], ...]",
                f"x: {describe(x)}, index: {describe(index)} -> out: {describe(node.out)}"]
    par = parallel and _work(node) >= cpu.PARALLEL_MIN
    src = _source(name, ["x", "index", "out"] + dims + ["m"], comments, body, "n0",
                  " * ".join(dims), par, before=_bounds_check("gather", dim))
    return NodeKernel(name, src, list(index.shape) + [x.shape[dim]])


def _scatter_add(node: Node, parallel: bool, describe) -> NodeKernel | None:
    x, index, src_var = node.inputs
    rank = len(index.shape)
    if rank == 0:
        return None
    dim = ops.norm_dim("scatter_add", node.attr_dict["dim"], rank)
    # NOTE: the parallel loop must not run along dim: two of its steps could add to one element
    order = [d for d in range(rank) if d != dim] + [dim]

    def body(pad):
        lines, ipad = _loops(order, pad)
        s = " " * ipad
        target = _index(rank, {dim: f"index[{_index(rank, {})}]"})
        return lines + [s + f"out[{target}] += src[{_index(rank, {})}]"]

    name = f"scatter_add{node.out.id}"
    dims = [f"n{d}" for d in range(rank)]
    comments = [f"%{node.out.id} scatter_add along dim {dim}: out = x; "
                f"out[..., index[...], ...] += src[...]",
                f"x: {describe(x)}, index: {describe(index)}, src: {describe(src_var)} -> "
                f"out: {describe(node.out)}"]
    # the loop over dim is innermost, so a rank-1 index has no parallel loop
    par = parallel and rank > 1 and int(np.prod(index.shape, dtype=np.int64)) >= cpu.PARALLEL_MIN
    src = _source(name, ["x", "index", "src", "out"] + dims + ["m"], comments, body,
                  f"n{order[0]}", " * ".join(dims), par,
                  before=_bounds_check("scatter_add", dim) + ["out[...] = x"])
    return NodeKernel(name, src, list(index.shape) + [x.shape[dim]])


_MAKERS = {"unfold": _unfold, "fold": _fold, "argmax": _argmax, "argmin": _argmax,
           "gather": _gather, "scatter_add": _scatter_add}
