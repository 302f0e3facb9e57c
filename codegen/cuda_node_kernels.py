"""The CUDA rendering of the node kernels (``unfold``/``fold``, ``max_pool2d`` and its
gradient, ``argmax``/``argmin`` along a dim, ``gather``, ``scatter_add``): the counterpart of
``cpu_node_kernels``, from the same plans. Each kernel is a grid-stride loop with one thread
per element it writes:

- unfold: per column element, the input pixel it copies (or the pad value);
- fold: per image pixel, the sum over the taps that land on it (a gather, so no atomics and
  the sum is deterministic, in the CPU's tap order);
- max_pool2d: per output element, its window's first maximum (or NaN); its gradient: per
  pixel, the gradients of the windows whose argmax it is (recomputed: no atomics, and the sum
  in the CPU's order);
- argmax: per output element, a serial walk along the dim (the first extreme wins, NaN first);
- gather: per index element; scatter_add: per index element, ``cuda.atomic.add`` into out
  (which the entry first fills with x), so float sums land in no fixed order.

Indices outside ``[0, m)`` are counted in the flags array and the entry raises IndexError.
"""

from __future__ import annotations

from .kernel import KernelPlan

_SUFFIX = {"float32": "f32", "float64": "f64", "int32": "i32", "int64": "i64", "bool": "b"}


def _type(v) -> str:
    return f"{_SUFFIX[v.dtype.name]}[{','.join('1' if d == 1 else 'n' for d in v.shape)}]"


def threads(plan: KernelPlan) -> list:
    """Sizes whose product is the number of elements the kernel's loop covers."""
    if plan.kind == "fused":
        return list(plan.domain)
    if plan.kind == "unfold":
        n, c, _, _, oh, ow = plan.sizes
        return [n, c, oh, ow, plan.facts["kernel"][0] * plan.facts["kernel"][1]]
    if plan.kind == "fold":
        return list(plan.sizes[:4])
    if plan.kind == "max_pool2d":
        return list(plan.sizes[:2]) + list(plan.sizes[4:])
    if plan.kind == "max_pool2d_grad":
        return list(plan.sizes[:4])
    if plan.kind in ("argmax", "argmin"):
        return [n for d, n in enumerate(plan.sizes) if d != plan.facts["dim"]]
    return list(plan.sizes[:-1])  # gather / scatter_add: the index's elements


def _split(flat: str, names: list, sizes: list, pad: str) -> list:
    """``names`` (C order, extents ``sizes``) from the flat index ``flat``."""
    if len(names) == 1:
        return [pad + f"{names[0]} = {flat}"]
    lines = [pad + f"r_ = {flat}"]
    for name, size in zip(reversed(names[1:]), reversed(sizes[1:])):
        lines += [pad + f"{name} = r_ % {size}", pad + f"r_ //= {size}"]
    return lines + [pad + f"{names[0]} = r_"]


def _kernel(name, params, comments, total, body) -> str:
    lines = ["@cuda.jit(cache=True)", f"def {name}({', '.join(params)}):"]
    lines += [f"    # {c}" for c in comments]
    lines.append(f"    for e in range(cuda.grid(1), {total}, cuda.gridsize(1)):")
    return "\n".join(lines + body) + "\n"


def _lit(x, dtype) -> str:
    from .cuda import literal
    return literal(x, dtype)


def _geometry(f: dict) -> tuple:
    (kh, kw), (dh, dw), (ph, pw), (sh, sw) = f["kernel"], f["dilation"], f["padding"], \
        f["stride"]
    return kh, kw, dh, dw, ph, pw, sh, sw


def _attrs(f: dict) -> str:
    return (f"kernel {tuple(f['kernel'])}, dilation {tuple(f['dilation'])}, padding "
            f"{tuple(f['padding'])}, stride {tuple(f['stride'])}")


def _unfold(plan: KernelPlan, helpers) -> tuple:
    (x,), (out,) = plan.inputs, plan.outputs
    kh, kw, dh, dw, ph, pw, sh, sw = _geometry(plan.facts)
    fill = _lit(plan.facts["pad_value"], x.dtype)
    p = " " * 8
    body = _split("e", ["n", "c", "i", "j", "oh", "ow"], ["N", "C", kh, kw, "OH", "OW"], p) + [
        p + f"h = oh * {sh} + i * {dh} - {ph}",
        p + f"w = ow * {sw} + j * {dw} - {pw}",
        p + f"v = x[n, c, h, w] if 0 <= h < H and 0 <= w < W else {fill}",
        p + f"out[n, (c * {kh} + i) * {kw} + j, oh * OW + ow] = v"]
    comments = [f"%{out.id} unfold (im2col): {_attrs(plan.facts)}, pad value {fill}",
                f"x: {_type(x)} (N, C, H, W) -> out: {_type(out)} (N, C*{kh * kw}, OH*OW)"]
    total = f"N * C * OH * OW * {kh * kw}"
    params = ["x", "out", "N", "C", "H", "W", "OH", "OW"]
    return _kernel(plan.name, params, comments, total, body), ()


def _fold(plan: KernelPlan, helpers) -> tuple:
    (cols,), (out,) = plan.inputs, plan.outputs
    kh, kw, dh, dw, ph, pw, sh, sw = _geometry(plan.facts)
    zero = _lit(0, out.dtype)
    p = " " * 8
    # pixel (h, w) receives tap (i, j) of output position (oh, ow) when
    # h = oh * sh + i * dh - ph, i.e. when (h + ph - i * dh) is a multiple of sh in range
    body = _split("e", ["n", "c", "h", "w"], ["N", "C", "H", "W"], p) + [
        p + f"acc = {zero}",
        p + f"for i in range({kh}):",
        p + f"    y = h + {ph} - i * {dh}",
        p + f"    if y < 0 or y % {sh} != 0 or y // {sh} >= OH:",
        p + "        continue",
        p + f"    oh = y // {sh}",
        p + f"    for j in range({kw}):",
        p + f"        z = w + {pw} - j * {dw}",
        p + f"        if z < 0 or z % {sw} != 0 or z // {sw} >= OW:",
        p + "            continue",
        p + f"        acc += cols[n, (c * {kh} + i) * {kw} + j, oh * OW + z // {sw}]",
        p + "out[n, c, h, w] = acc"]
    comments = [f"%{out.id} fold (col2im, overlapping windows add up): {_attrs(plan.facts)}",
                f"cols: {_type(cols)} (N, C*{kh * kw}, OH*OW) -> out: {_type(out)} "
                f"(N, C, H, W); one thread per pixel sums the taps landing on it"]
    params = ["cols", "out", "N", "C", "H", "W", "OH", "OW"]
    return _kernel(plan.name, params, comments, "N * C * H * W", body), ()


def _window_max(f: dict, dtype, p: str, track: bool) -> list:
    """The first maximum or NaN of window (oh, ow) of plane (n, c) (``best``; its tap ``at``
    when ``track``), as the CPU kernel finds it: padding taps never win."""
    kh, kw, dh, dw, ph, pw, sh, sw = _geometry(f)
    from tracejit import ops
    lines = [p + f"best = {_lit(ops.pool_low(dtype), dtype)}"]
    lines += [p + "at = 0"] if track else []
    lines += [p + f"for k in range({kh * kw}):",
              p + f"    h = oh * {sh} + (k // {kw}) * {dh} - {ph}",
              p + f"    w = ow * {sw} + (k % {kw}) * {dw} - {pw}"]
    if ph or pw:
        lines += [p + "    if h < 0 or h >= H or w < 0 or w >= W:  # a padding tap",
                  p + "        continue"]
    lines.append(p + "    v = x[n, c, h, w]")
    if dtype.kind == "f":
        lines += [p + "    if v != v:", p + "        best = v"]
        lines += [p + "        at = k"] if track else []
        lines.append(p + "        break")
    lines += [p + "    if v > best:", p + "        best = v"]
    return lines + ([p + "        at = k"] if track else [])


def _max_pool2d(plan: KernelPlan, helpers) -> tuple:
    (x,), (out,) = plan.inputs, plan.outputs
    p = " " * 8
    body = _split("e", ["n", "c", "oh", "ow"], ["N", "C", "OH", "OW"], p) + \
        _window_max(plan.facts, x.dtype, p, track=False) + [p + "out[n, c, oh, ow] = best"]
    comments = [f"%{out.id} max_pool2d: {_attrs(plan.facts)}",
                f"x: {_type(x)} (N, C, H, W) -> out: {_type(out)} (N, C, OH, OW); one thread "
                f"per output element"]
    params = ["x", "out", "N", "C", "H", "W", "OH", "OW"]
    return _kernel(plan.name, params, comments, "N * C * OH * OW", body), ()


def _max_pool2d_grad(plan: KernelPlan, helpers) -> tuple:
    (g, x), (out,) = plan.inputs, plan.outputs
    kh, kw, dh, dw, ph, pw, sh, sw = _geometry(plan.facts)
    p = " " * 8
    q = p + " " * 8
    # pixel (y, z) takes the gradient of each window (oh, ow) covering it whose argmax it is;
    # the windows in (oh, ow) order, as the CPU kernel adds them (taps in reverse)
    body = _split("e", ["n", "c", "y", "z"], ["N", "C", "H", "W"], p) + [
        p + f"acc = {_lit(0, out.dtype)}",
        p + f"for i in range({kh - 1}, -1, -1):",
        p + f"    oh = y + {ph} - i * {dh}",
        p + f"    if oh < 0 or oh % {sh} != 0 or oh // {sh} >= OH:",
        p + "        continue",
        p + f"    oh //= {sh}",
        p + f"    for j in range({kw - 1}, -1, -1):",
        p + f"        ow = z + {pw} - j * {dw}",
        p + f"        if ow < 0 or ow % {sw} != 0 or ow // {sw} >= OW:",
        p + "            continue",
        p + f"        ow //= {sw}"]
    body += _window_max(plan.facts, x.dtype, q, track=True) + [
        q + f"if at == i * {kw} + j:",
        q + "    acc += g[n, c, oh, ow]",
        p + "out[n, c, y, z] = acc"]
    comments = [f"%{out.id} max_pool2d_grad: {_attrs(plan.facts)}",
                f"g: {_type(g)} (N, C, OH, OW), x: {_type(x)} (N, C, H, W) -> out: "
                f"{_type(out)}; one thread per pixel adds the windows whose argmax it is"]
    params = ["g", "x", "out", "N", "C", "H", "W", "OH", "OW"]
    return _kernel(plan.name, params, comments, "N * C * H * W", body), ()


def _argmax(plan: KernelPlan, helpers) -> tuple:
    (x,), (out,) = plan.inputs, plan.outputs
    rank = len(x.shape)
    dim = plan.facts["dim"]
    outer = [d for d in range(rank) if d != dim]
    better = ">" if plan.kind == "argmax" else "<"
    at = ", ".join("k" if d == dim else f"i{d}" for d in range(rank))
    first = ", ".join("0" if d == dim else f"i{d}" for d in range(rank))
    out_index = ", ".join(f"i{d}" if d != dim else "0" for d in range(rank)
                          if d != dim or plan.facts["keepdim"]) or "()"
    p = " " * 8
    body = _split("e", [f"i{d}" for d in outer], [f"n{d}" for d in outer], p) + [
        p + f"best = x[{first}]",
        p + "where = 0",
        p + f"for k in range(1, n{dim}):"]
    if x.dtype.kind == "f":  # numpy: the first NaN wins
        body += [p + "    if best != best:",
                 p + "        break",
                 p + f"    v = x[{at}]",
                 p + f"    if v {better} best or v != v:"]
    else:
        body += [p + f"    v = x[{at}]",
                 p + f"    if v {better} best:"]
    body += [p + "        best = v",
             p + "        where = k",
             p + f"out[{out_index}] = where"]
    comments = [f"%{out.id} {plan.kind} over dim {dim} (the first extreme wins, as numpy)",
                f"x: {_type(x)} -> out: {_type(out)}"]
    total = " * ".join(f"n{d}" for d in outer)
    params = ["x", "out"] + [f"n{d}" for d in range(rank)]
    return _kernel(plan.name, params, comments, total, body), ()


def _bounds(op: str, dim: int) -> tuple:
    return ("IndexError", f"{op}: index out of bounds for dimension {dim}")


def _gather(plan: KernelPlan, helpers) -> tuple:
    (x, index), (out,) = plan.inputs, plan.outputs
    rank = len(index.shape)
    dim = plan.facts["dim"]
    names = [f"i{d}" for d in range(rank)]
    at = ", ".join(names)
    read = ", ".join("q" if d == dim else f"i{d}" for d in range(rank))
    p = " " * 8
    body = _split("e", names, [f"n{d}" for d in range(rank)], p) + [
        p + f"q = index[{at}]",
        p + "if q < 0 or q >= m:  # counted; the entry raises IndexError",
        p + "    cuda.atomic.add(flags, 0, 1)",
        p + "else:",
        p + f"    out[{at}] = x[{read}]"]
    comments = [f"%{out.id} gather along dim {dim}: out[...] = x[..., index[...], ...]",
                f"x: {_type(x)}, index: {_type(index)} -> out: {_type(out)}"]
    params = ["x", "index", "out", "flags"] + [f"n{d}" for d in range(rank)] + ["m"]
    total = " * ".join(f"n{d}" for d in range(rank))
    return _kernel(plan.name, params, comments, total, body), (_bounds("gather", dim),)


def _scatter_add(plan: KernelPlan, helpers) -> tuple:
    (x, index, src), (out,) = plan.inputs, plan.outputs
    rank = len(index.shape)
    dim = plan.facts["dim"]
    names = [f"i{d}" for d in range(rank)]
    at = ", ".join(names)
    target = ", ".join("q" if d == dim else f"i{d}" for d in range(rank))
    p = " " * 8
    value = f"src[{at}]"
    body = _split("e", names, [f"n{d}" for d in range(rank)], p) + [
        p + f"q = index[{at}]",
        p + "if q < 0 or q >= m:  # counted; the entry raises IndexError",
        p + "    cuda.atomic.add(flags, 0, 1)",
        p + "else:",
        p + f"    cuda.atomic.add(out, {target if rank == 1 else f'({target})'}, {value})"]
    comments = [f"%{out.id} scatter_add along dim {dim}: out = x (copied by the entry); "
                f"out[..., index[...], ...] += src[...] (atomics: float sums in no fixed order)",
                f"x: {_type(x)}, index: {_type(index)}, src: {_type(src)} -> out: {_type(out)}"]
    params = ["x", "index", "src", "out", "flags"] + [f"n{d}" for d in range(rank)] + ["m"]
    total = " * ".join(f"n{d}" for d in range(rank))
    return _kernel(plan.name, params, comments, total, body), (_bounds("scatter_add", dim),)


_RENDER = {"unfold": _unfold, "fold": _fold, "max_pool2d": _max_pool2d,
           "max_pool2d_grad": _max_pool2d_grad, "argmax": _argmax, "argmin": _argmax,
           "gather": _gather, "scatter_add": _scatter_add}


def source(plan: KernelPlan, helpers) -> tuple:
    """(source, error slots) of a node kernel's plan."""
    from .kernel import Unsupported
    if plan.kind == "scatter_add" and plan.outputs[0].dtype.name == "bool":
        raise Unsupported("scatter_add on bool")  # no atomic add for bools
    return _RENDER[plan.kind](plan, helpers)
