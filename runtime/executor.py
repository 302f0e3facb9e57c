"""Runs a specialization's graph on tensors: the compiled runner when a backend provided one,
else the reference interpreter. When the outputs need a ``grad_fn`` (inputs require grad and the
function runs no backward itself), the specialization's forward and backward graphs run
instead (``runtime/backward.py``; the specialization builds them, by tracing, on the first such
call); a function that also sets ``.grad`` or updates in place an input that requires grad is
replayed op by op through eager autograd.

A specialization (``tracing/specializations.py``) is read as its graph facts, ``spec.compiled``
(a ``CompiledGraph``: graphs, mutated inputs, gradient writes...), plus its live parts
(``runner``, ``compile_graph``, ``compiled_grad``, ``build_grad``); nothing here imports the
tracer or the passes.

When compiled code raises (an index out of range, say), the error the user gets is the
reference interpreter's: the executor runs the unfused graph through ``interpret`` on the same
inputs, and the first node that fails raises, naming the node (``%3 gather``), the op, the
operand shapes and the user line that created the node. Re-running is sound because a failed call
has changed nothing the re-run reads: in-place updates are extra graph outputs, copied into
the inputs only after a call succeeded (``write_back``), and a kernel that writes an input's
new value straight into its array runs only after every step that can raise
(``codegen/memory_plan.write_in_place``; the first call, which compiles, writes copies).
The re-run draws no random numbers either: the generator is put back afterwards. It costs
one interpreted run, only on the failing call.
"""

from __future__ import annotations

import warnings

import numpy as np

from tracejit import creation, ops
from tracejit.autograd import grad_mode
from tracejit.dispatch import apply, current_tracer
from tracejit.errors import enter_node, exit_node
from tracejit.ir import Var, defined_vars
from tracejit.tensor import Tensor

from . import arrays as A
from . import backward
from .compile import CompileError
from .interpret import GraphRuntimeError, node_error

__all__ = ["GraphRuntimeError", "execute", "recover", "replay", "write_back"]


def replay(graph, inputs: list, regions: tuple = ()) -> list:
    """Run ``graph`` op by op on Tensors through ``dispatch.apply``: autograd records it, and so
    does a tracer, if one is active (a graph replayed inside a traced function). ``regions``
    (custom_function.Region) stand for their nodes: the autograd.Function is applied instead,
    so the tape calls its backward."""
    tracer = current_tracer()
    env = {v.id: t for v, t in zip(graph.inputs, inputs)}
    device = any(A.on_device(t._data) for t in inputs)  # constants join the inputs' device
    starts = {r.first: r for r in regions}
    inside = frozenset().union(*(r.nodes for r in regions)) if regions else frozenset()
    for node in graph.nodes:
        if node.out.id in inside:
            region = starts.get(node.out.id)
            if region is not None:
                token = enter_node(node.loc)
                try:
                    region.call(env)
                except Exception as e:
                    raise node_error(node, e) from e
                finally:
                    exit_node(token)
            continue
        if node.op == "const":
            t = Tensor._make(A.like(np.array(node.attr_dict["value"].array), device))
            env[node.out.id] = t if tracer is None else tracer.constant(t)
            continue
        args = [env[x.id] if isinstance(x, Var) else x for x in node.inputs]
        # errors, and nodes a tracer records from here, point at the node's own line
        token = enter_node(node.loc)
        try:
            env[node.out.id] = apply(ops.OPS[node.op], *args, **node.attr_dict)
        except Exception as e:
            raise node_error(node, e) from e
        finally:
            exit_node(token)
    return [env[x.id] if isinstance(x, Var) else x for x in graph.outputs]


def execute(spec, inputs: list) -> list:
    """Outputs (Tensors, or Python values for constant outputs) of ``spec.compiled.graph``."""
    cg = spec.compiled
    graph = cg.graph
    if grad_mode.enabled and not cg.ran_backward and any(t.requires_grad for t in inputs):
        # autograd.Functions: the raw graph, whose regions call them (custom_function.Region)
        regions = getattr(spec, "custom_regions", ())
        source = cg.raw if regions else cg.optimized
        # in-place updates of inputs that carry no gradient (BatchNorm's running statistics)
        # are ordinary outputs of the forward graph, written back after the call
        if cg.grad_writes or spec.compile_graph is None or any(
                inputs[i].requires_grad for i, _ in cg.mutated):
            return replay(source, inputs, regions)  # the unfused graph: its ops have vjps
        if spec.compiled_grad is None:
            spec.compiled_grad = spec.build_grad(inputs)
        if spec.compiled_grad is False:  # an autograd.Function that cannot be compiled
            return replay(source, inputs, regions)
        if not any(i in spec.compiled_grad.reads for i, _ in cg.mutated):
            try:
                return backward.call(spec.compiled_grad, inputs)
            except CompileError:
                raise
            except Exception as e:
                _explain_failure(spec, inputs, e)  # raises the failing node's error
                raise  # the interpreter ran the forward graph without error: a tracejit bug
        return replay(source, inputs, regions)  # the backward reads an input updated in place
    arrays = None
    if spec.runner is not None:
        try:
            arrays = spec.runner(*[t._data for t in inputs])
        except Exception as e:
            arrays = recover(spec, inputs, e)
    if arrays is None:  # the interpreter (on host copies of device inputs)
        arrays = backward.interpret_runner(graph)(*[t._data for t in inputs])
    return [Tensor._make(a) if isinstance(x, Var) else x for a, x in zip(arrays, graph.outputs)]


def recover(spec, inputs: list, exc: Exception) -> list | None:
    """``spec.runner`` raised ``exc`` on ``inputs``: raise the failing node's error. A compile
    failure (our bug, never the user's) falls back, loudly, to the interpreter: None, and
    ``spec.runner`` is cleared. Should the interpreter run the graph without error, the compiled
    code is wrong: its results are returned, with a warning."""
    if isinstance(exc, CompileError):
        warnings.warn(f"tracejit: compiling a graph failed, it runs on the reference "
                      f"interpreter instead: {exc}", RuntimeWarning, stacklevel=5)
        spec.runner = None
        return None
    arrays = _explain_failure(spec, inputs, exc)  # raises the failing node's error
    warnings.warn(f"tracejit: compiled code for {spec.compiled.name or 'a traced function'} "
                  f"raised {type(exc).__name__}: {exc}, but the reference interpreter runs "
                  f"the graph without error; its results are used (please report this "
                  f"tracejit bug)", RuntimeWarning, stacklevel=5)
    if len(arrays) != len(spec.compiled.graph.outputs):
        raise exc
    return arrays


def _explain_failure(spec, inputs: list, exc: Exception) -> list:
    """Compiled code raised ``exc``: run the unfused graph through the reference interpreter,
    which raises the failing node's error (see the module docstring). Returns the interpreter's
    results should it succeed: then the compiled code is wrong (a tracejit bug)."""
    cg = spec.compiled
    graph = cg.optimized if cg.optimized is not None else cg.graph
    rng = creation._rng().bit_generator
    state = rng.state
    try:
        return backward.interpret_runner(graph)(*[t._data for t in inputs])
    except GraphRuntimeError as e:
        raise e.with_traceback(None) from exc
    finally:
        rng.state = state


def aliased_mutations(graph, mutated) -> frozenset:
    """Output positions of mutated inputs' new values that may share memory with another
    mutated input: a graph input reached through views or through ops whose result may be a
    view (``b.copy_(a); a.add_(1)`` leaves b's new value ``a`` itself, or ``expand(a)``).
    Those values are copied before any input is written back (numba's views of an input carry
    no ``.base`` to recognise them by at run time)."""
    position = {v.id: i for i, v in enumerate(graph.inputs)}
    producer = {v.id: n for n in graph.nodes for v in defined_vars(n)}
    targets = {inp for inp, _ in mutated}
    aliased = set()
    for inp, pos in mutated:
        stack, seen = [graph.outputs[pos]], set()
        while stack:
            x = stack.pop()
            if not isinstance(x, Var) or x.id in seen:
                continue
            seen.add(x.id)
            if x.id in position:
                if position[x.id] != inp and position[x.id] in targets:
                    aliased.add(pos)
                    break
            elif x.id in producer:
                node = producer[x.id]
                op = ops.OPS[node.op]
                if op.view or not op.fresh:
                    stack.extend(node.inputs)
    return frozenset(aliased)


def write_mutations(mutated, inputs: list, outs: list, aliased=frozenset()) -> None:
    """Copy each mutated input's new value (``outs[pos]``) into input ``inp`` (a Tensor), for
    ``(inp, pos)`` in ``mutated``, bumping its version counter as an in-place op would;
    ``aliased`` (``aliased_mutations``): values copied first. A value that is the input's own
    array (compiled code wrote it there: ``codegen/memory_plan.write_in_place``) is in place."""
    if aliased:
        outs = [A.copy(o) if k in aliased else o for k, o in enumerate(outs)]
    for inp, pos in mutated:
        target = inputs[inp]
        if outs[pos] is not target._data:
            A.copy_into(target._data, outs[pos])
        target._version[0] += 1


def write_back(compiled, inputs: list, outs: list) -> None:
    """Leave inputs as eager execution would: in-place updates, then ``.grad`` assignments
    (``compiled``: a ``CompiledGraph``; ``outs``: the arrays of its graph outputs)."""
    write_mutations(compiled.mutated, inputs, outs, compiled.aliased_mutations)
    for inp, pos in compiled.grad_writes:
        target = inputs[inp]
        if pos is None:
            target.grad = None
        elif target.grad is not None and target.grad.shape == tuple(outs[pos].shape) and (
                A.on_device(target.grad._data) or target.grad._data.flags.writeable):
            A.copy_into(target.grad._data, outs[pos])
            target.grad._version[0] += 1
        else:  # a private copy: two parameters may have received the same gradient value
            target.grad = Tensor._make(_private(outs[pos], target.dtype))


def _private(a, dtype):
    """A copy of ``a`` with this dtype, on ``a``'s side."""
    if A.on_device(a) and a.dtype == dtype:
        return A.copy(a)
    return A.like(np.array(A.host(a), dtype=dtype), A.on_device(a))
