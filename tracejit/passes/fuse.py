"""fuse: group nodes into kernels. Each group becomes one ``fused`` node holding its subgraph.

A group has a loop domain: a full shape ``F`` split into outer dims and trailing *row* dims.
Its nodes are elementwise ops over ``F`` (vectors), elementwise ops over the outer dims only
(row scalars, shape ``F`` with the row dims set to 1), and reductions over exactly the row dims
(vector -> row scalar). So an elementwise chain is one loop nest, and softmax, log_softmax,
logsumexp, layer_norm or an MSE reduce to one kernel per row block: the kernel walks each row a
few times but never materialises an intermediate array.

A producer joins its consumer's group when every use of its value is inside that group, it is
not a graph output, and it fits the group's domain. A value also needed outside (an activation
a training graph's backward pass reads, or a result) still joins as one more output of the
kernel ("export"), when every outside use comes after the group (the group runs where its root
was): an LSTM cell's four gates, its new state and output are then one loop that writes each of
them once. Row groups export too: a vector value is written by one of the row loops that compute
it, a row scalar once per row. So a training step's log_softmax (amax, sub, exp, sum, log, sub)
is one row kernel that also writes the ``exp(x - max)`` and ``sum`` the backward reads, not four
kernels split at those values. Views and library ops (matmul, indexing, windows) stay outside
groups.

>>> print(fuse(graph))                                                 # doctest: +SKIP
graph(x: f32[4,8]):
  %7: f32[4,8] = fused[k0: amax sub exp sum div] x
  return %7
"""

from __future__ import annotations

from ..ir import Graph, GraphBuilder, Node, Var, rebuild
from ..ops import ELEMENTWISE, OPS, reduces

MAX_EXTRA_OUTPUTS = 8  # results a kernel writes besides its root


def is_fusible(node: Node) -> bool:
    op = OPS.get(node.op)
    if op is None:
        return False
    # reductions a group can hold: the ``reduction`` rows (argmax, cumsum are kernels elsewhere)
    if op.reduction:
        return True
    return op.kind == ELEMENTWISE or node.op == "detach"


class _Group:
    """A kernel under construction: its members and loop domain (``full`` shape, ``row_dims``
    reduced by its reductions; no row dims means a plain elementwise loop nest)."""

    def __init__(self, root: Node):
        self.nodes = [root]
        self.ids = {root.out.id}
        self.extras: list = []  # members also used outside: more outputs of the kernel
        if reduces(root):
            self.full = root.inputs[0].shape
            self.row_dims = tuple(root.attr_dict["dims"])
        else:
            self.full = root.out.shape  # provisional: may turn out to be a row-scalar shape
            self.row_dims = ()

    def row_scalar_shape(self):
        return tuple(1 if i in self.row_dims else n for i, n in enumerate(self.full))

    def is_row_scalar(self, shape) -> bool:
        # reducing every dim without keepdim gives 0-d row scalars
        return shape == self.row_scalar_shape() or (
            shape == () and self.row_dims == tuple(range(len(self.full))))

    def fits(self, node: Node) -> bool:
        """Can ``node`` (a producer of some member) be computed inside this group?"""
        shape = node.out.shape
        if reduces(node):
            d = node.attr_dict
            x = node.inputs[0]
            if not d["keepdim"]:  # only a reduction to a 0-d value (a loss, a mean) joins
                everything = tuple(range(len(x.shape)))
                return tuple(d["dims"]) == everything and shape == self.full == () or (
                    self.row_dims == everything and x.shape == self.full)
            if not self.row_dims:
                # the group so far is elementwise over `full`: x's shape (then the members are
                # vectors) or x's row scalars
                scalar = tuple(1 if i in d["dims"] else n for i, n in enumerate(x.shape))
                return x.shape == self.full or shape == self.full == scalar
            return x.shape == self.full and tuple(d["dims"]) == self.row_dims
        if not self.row_dims:
            # the group so far is elementwise over `full`; a value with ones where `full` has
            # none is a row scalar, and fixes the row dims
            return shape == self.full or bool(_ones_against(shape, self.full))
        return shape == self.full or self.is_row_scalar(shape)

    def can_export(self, node: Node) -> bool:
        """Can ``node`` (which fits) join as one more output (it is used outside the group too)?
        Any member can: a vector is written where a loop computes it, a row scalar once per row
        (codegen/kernel.py), and a vector of an elementwise group that later turns out to be a
        row scalar (a reduction of it joins) stays one."""
        return len(self.extras) < MAX_EXTRA_OUTPUTS

    def add(self, node: Node):
        if reduces(node) and not self.row_dims:
            self.full = node.inputs[0].shape  # unchanged when the members so far are vectors
            self.row_dims = tuple(node.attr_dict["dims"])
        elif not self.row_dims and node.out.shape != self.full:
            self.row_dims = _ones_against(node.out.shape, self.full)
        self.nodes.append(node)
        self.ids.add(node.out.id)


def _ones_against(shape, full) -> tuple:
    """The dims where ``shape`` is 1 and ``full`` is not (same rank), else ()."""
    if len(shape) != len(full):
        return ()
    if any(a != b and a != 1 for a, b in zip(shape, full)):
        return ()
    return tuple(i for i, (a, b) in enumerate(zip(shape, full)) if a == 1 and b != 1)


def fuse(graph: Graph) -> Graph:
    producers = {n.out.id: n for n in graph.nodes}
    users: dict = {}
    for n in graph.nodes:
        for x in n.inputs:
            if isinstance(x, Var):
                users.setdefault(x.id, []).append(n.out.id)
    outputs = {x.id for x in graph.outputs if isinstance(x, Var)}

    position = {n.out.id: k for k, n in enumerate(graph.nodes)}
    assigned: dict = {}  # node id -> group
    groups = []
    for node in reversed(graph.nodes):
        # a detach on its own is a view, not a kernel that copies (inside a group it is free)
        if node.out.id in assigned or not is_fusible(node) or node.op == "detach":
            continue
        group = _Group(node)
        assigned[node.out.id] = group
        groups.append(group)
        stack = [x for x in node.inputs if isinstance(x, Var)]
        while stack:
            v = stack.pop()
            p = producers.get(v.id)
            if p is None or p.out.id in assigned or not is_fusible(p) or not group.fits(p):
                continue
            outside = [u for u in users.get(p.out.id, ()) if u not in group.ids]
            if outside or p.out.id in outputs:
                # needed elsewhere too: the kernel writes it, if no outside use comes before
                # the group runs (it runs where its root was)
                if not group.can_export(p) or \
                        any(position[u] < position[node.out.id] for u in outside):
                    continue
                group.extras.append(p.out)
            group.add(p)
            assigned[p.out.id] = group
            stack.extend(x for x in p.inputs if isinstance(x, Var))
    return _rewrite(graph, groups, assigned)


def _rewrite(graph: Graph, groups, assigned) -> Graph:
    roots = {g.nodes[0].out.id: g for g in groups}
    nodes = []
    for node in graph.nodes:
        g = assigned.get(node.out.id)
        if g is None:
            nodes.append(node)
            continue
        if node.out.id not in roots:
            continue  # emitted with its group's root (roots come last in program order)
        nodes.append(_group_node(g, len(nodes)))
    return rebuild(graph, nodes)


def _group_node(group: _Group, index: int) -> Node:
    members = sorted(group.nodes, key=lambda n: n.out.id)
    member_ids = {n.out.id for n in members}
    root = group.nodes[0]
    b = GraphBuilder()
    mapping: dict = {}
    ext = []
    for n in members:
        for x in n.inputs:
            if isinstance(x, Var) and x.id not in member_ids and x.id not in mapping:
                mapping[x.id] = b.add_input(f"a{len(ext)}", x.shape, x.dtype)
                ext.append(x)
    for n in members:
        ins = [mapping[x.id] if isinstance(x, Var) else x for x in n.inputs]
        mapping[n.out.id] = b.add_node(n.op, ins, n.attr_dict, n.out.shape, n.out.dtype, n.loc)
    body = b.build([mapping[root.out.id]] + [mapping[v.id] for v in group.extras])
    name = f"k{index}_" + "_".join(dict.fromkeys(n.op for n in members))
    attrs = (("body", body), ("full", group.full), ("kernel", name),
             ("row_dims", group.row_dims))
    if group.extras:  # see ir.defined_vars: the other Vars this node defines
        attrs += (("outputs", tuple(group.extras)),)
    return Node(root.out, "fused", tuple(ext), attrs, root.loc)
