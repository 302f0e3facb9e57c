"""TensorBoard logging with torch's API: ``SummaryWriter`` writes real event files.

>>> from tracejit.utils.tensorboard import SummaryWriter    # doctest: +SKIP
>>> with SummaryWriter("runs/mlp") as w:                     # doctest: +SKIP
...     for step in range(100):
...         w.add_scalar("loss", loss.item(), step)

The files are written through tensorboardX's or tensorboard's event writer and protocol buffers
(whichever is installed: ``pip install 'tracejit[watch]'``), so ``tensorboard --logdir runs``
reads them. ``add_graph`` shows the traced IR graph of a module or function.
"""

from __future__ import annotations

import os
import socket
import time
from datetime import datetime

import numpy as np

# the event writer and protocol-buffer modules of each package that has them, preferred first
_WRITERS = (("tensorboardX.event_file_writer", "tensorboardX.proto"),
            ("tensorboard.summary.writer.event_file_writer", "tensorboard.compat.proto"))
_PROTOS = dict(attr_value="attr_value_pb2", event="event_pb2", graph="graph_pb2",
               node_def="node_def_pb2", summary="summary_pb2", tensor="tensor_pb2",
               shape="tensor_shape_pb2")


def _backend():
    """(EventFileWriter class, {name: protobuf module}) from tensorboardX, else tensorboard."""
    import importlib
    for writer_module, proto_package in _WRITERS:
        try:
            writer = importlib.import_module(writer_module).EventFileWriter
            protos = {k: importlib.import_module(f"{proto_package}.{m}")
                      for k, m in _PROTOS.items()}
        except ImportError:
            continue
        return writer, protos
    raise ImportError(
        "tracejit.utils.tensorboard.SummaryWriter writes TensorBoard event files through "
        "tensorboardX or tensorboard, and neither is installed: pip install 'tracejit[watch]' "
        "(or pip install tensorboardX)")


def _numpy(x) -> np.ndarray:
    from ..tensor import Tensor
    if isinstance(x, Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _scalar(x, what: str) -> float:
    a = _numpy(x)
    if a.size != 1:
        raise ValueError(f"SummaryWriter.{what}: a scalar value is needed, got shape {a.shape}")
    return float(a.reshape(()))


def _tensorflow_edges() -> np.ndarray:
    """TensorFlow's default histogram bucket edges: +-1e-12 * 1.1**k up to 1e20, and 0."""
    pos = [1e-12]
    while pos[-1] < 1e20:
        pos.append(pos[-1] * 1.1)
    pos = np.array(pos)
    return np.concatenate([-pos[::-1], [0.0], pos])


class SummaryWriter:
    """Writes scalars, histograms, text, images and graphs to event files in ``log_dir``
    (default ``runs/<date>_<host><comment>``), as ``torch.utils.tensorboard.SummaryWriter``."""

    def __init__(self, log_dir=None, comment: str = "", purge_step=None, max_queue: int = 10,
                 flush_secs: int = 120, filename_suffix: str = ""):
        self._EventFileWriter, self._pb = _backend()
        if log_dir is None:
            stamp = datetime.now().strftime("%b%d_%H-%M-%S")
            log_dir = os.path.join("runs", f"{stamp}_{socket.gethostname()}{comment}")
        self.log_dir = os.fspath(log_dir)
        self._options = dict(max_queue_size=max_queue, flush_secs=flush_secs,
                             filename_suffix=filename_suffix)
        self._writers: dict = {}
        self._closed = False
        self._file_writer()  # the file exists from construction on, as torch's does
        if purge_step is not None:  # TensorBoard drops the events after it of earlier runs
            E = self._pb["event"]
            self._add_event(E.Event(file_version="brain.Event:2"), purge_step)
            self._add_event(E.Event(session_log=E.SessionLog(status=E.SessionLog.START)),
                            purge_step)

    # ------------------------------------------------------------------ plumbing
    def get_logdir(self) -> str:
        return self.log_dir

    def _file_writer(self, subdir: str | None = None):
        path = self.log_dir if subdir is None else os.path.join(self.log_dir, subdir)
        writer = self._writers.get(path)
        if writer is None:
            if self._closed:
                raise RuntimeError(f"SummaryWriter({self.log_dir!r}) is closed")
            os.makedirs(path, exist_ok=True)
            writer = self._writers[path] = self._EventFileWriter(path, **self._options)
        return writer

    def _add_event(self, event, step, walltime=None, subdir=None):
        event.wall_time = time.time() if walltime is None else float(walltime)
        if step is not None:
            event.step = int(step)
        self._file_writer(subdir).add_event(event)

    def _add_summary(self, value, step, walltime=None, subdir=None):
        summary = self._pb["summary"].Summary(value=[value])
        self._add_event(self._pb["event"].Event(summary=summary), step, walltime, subdir)

    # ------------------------------------------------------------------ public API
    def add_scalar(self, tag: str, scalar_value, global_step=None, walltime=None,
                   new_style: bool = False, double_precision: bool = False):
        """One point of the curve ``tag``."""
        value = _scalar(scalar_value, "add_scalar")
        self._add_summary(self._pb["summary"].Summary.Value(tag=tag, simple_value=value),
                          global_step, walltime)

    def add_scalars(self, main_tag: str, tag_scalar_dict: dict, global_step=None,
                    walltime=None):
        """Several curves in one chart: each goes to its own run ``<log_dir>/<main_tag>_<tag>``
        under the tag ``main_tag``, as torch does."""
        walltime = time.time() if walltime is None else walltime
        for tag, v in tag_scalar_dict.items():
            value = self._pb["summary"].Summary.Value(
                tag=main_tag, simple_value=_scalar(v, "add_scalars"))
            sub = f"{main_tag}_{tag}".replace("/", "_")
            self._add_summary(value, global_step, walltime, subdir=sub)

    def add_histogram(self, tag: str, values, global_step=None, bins="tensorflow",
                      walltime=None, max_bins=None):
        """A histogram of ``values`` (a tensor or array). ``bins``: ``"tensorflow"`` (TF's
        exponential buckets), a number, or any of numpy.histogram's bin rules."""
        a = _numpy(values).astype(np.float64).reshape(-1)
        if a.size == 0:
            raise ValueError(f"SummaryWriter.add_histogram({tag!r}): no values")
        if not np.isfinite(a).all():
            raise ValueError(f"SummaryWriter.add_histogram({tag!r}): the values contain NaN or "
                             f"inf")
        if isinstance(bins, str) and bins == "tensorflow":
            counts, edges = np.histogram(a, bins=_tensorflow_edges())
            nonzero = np.nonzero(counts)[0]
            lo, hi = max(nonzero[0] - 1, 0), min(nonzero[-1] + 2, len(counts))
            counts, limits = counts[lo:hi], edges[lo + 1:hi + 1]
        else:
            counts, edges = np.histogram(a, bins=bins)
            limits = edges[1:]
        if max_bins is not None and len(counts) > max_bins:
            step = -(-len(counts) // max_bins)
            counts = np.add.reduceat(counts, np.arange(0, len(counts), step))
            limits = limits[np.minimum(np.arange(step - 1, len(limits) + step - 1, step),
                                       len(limits) - 1)]
        hist = self._pb["summary"].HistogramProto(
            min=float(a.min()), max=float(a.max()), num=float(a.size), sum=float(a.sum()),
            sum_squares=float(np.dot(a, a)), bucket_limit=[float(x) for x in limits],
            bucket=[float(c) for c in counts])
        self._add_summary(self._pb["summary"].Summary.Value(tag=tag, histo=hist), global_step,
                          walltime)

    def add_text(self, tag: str, text_string: str, global_step=None, walltime=None):
        """Markdown text, shown in TensorBoard's text tab."""
        S = self._pb["summary"]
        meta = S.SummaryMetadata(plugin_data=S.SummaryMetadata.PluginData(plugin_name="text"))
        tensor = self._pb["tensor"].TensorProto(
            dtype=7,  # DT_STRING
            string_val=[str(text_string).encode("utf-8")],
            tensor_shape=self._pb["shape"].TensorShapeProto(
                dim=[self._pb["shape"].TensorShapeProto.Dim(size=1)]))
        self._add_summary(S.Summary.Value(tag=tag + "/text_summary", metadata=meta,
                                          tensor=tensor), global_step, walltime)

    def add_image(self, tag: str, img_tensor, global_step=None, walltime=None,
                  dataformats: str = "CHW"):
        """An image (float values in [0, 1] or uint8 in [0, 255]), encoded as PNG by Pillow."""
        try:
            from PIL import Image
        except ImportError:
            raise ImportError("SummaryWriter.add_image encodes PNG with Pillow, which is not "
                              "installed: pip install pillow") from None
        import io
        a = _numpy(img_tensor)
        fmt = dataformats.upper()
        if a.ndim != len(fmt) or sorted(fmt) not in (sorted("CHW"), sorted("HW")):
            raise ValueError(f"SummaryWriter.add_image({tag!r}): dataformats {dataformats!r} "
                             f"does not describe an image of shape {a.shape} (use CHW, HWC or HW)")
        if fmt == "HW":
            a = a[None]
        else:
            a = np.transpose(a, [fmt.index(c) for c in "CHW"])
        if a.dtype != np.uint8:
            a = (np.clip(a, 0.0, 1.0) * 255).round().astype(np.uint8)
        c, h, w = a.shape
        if c not in (1, 3, 4):
            raise ValueError(f"SummaryWriter.add_image({tag!r}): {c} channels (1, 3 or 4 needed)")
        pixels = a[0] if c == 1 else np.transpose(a, (1, 2, 0))
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="PNG")
        image = self._pb["summary"].Summary.Image(height=h, width=w, colorspace=c,
                                                  encoded_image_string=buf.getvalue())
        self._add_summary(self._pb["summary"].Summary.Value(tag=tag, image=image), global_step,
                          walltime)

    def add_graph(self, model, input_to_model=None, verbose: bool = False,
                  use_strict_trace: bool = True):
        """The traced IR graph of ``model`` (a module, a function or a ``tj.trace`` object)
        called with ``input_to_model`` (a tensor or a tuple of them), shown in the Graphs tab:
        one node per IR node, named by op, with its output shape and dtype and the user's
        source line."""
        from ..tracing.front import TracedFunction, trace
        if input_to_model is None:
            raise ValueError("SummaryWriter.add_graph needs input_to_model: the graph is traced "
                             "from a call")
        args = input_to_model if isinstance(input_to_model, (tuple, list)) else (input_to_model,)
        traced = model if isinstance(model, TracedFunction) else trace(model, backend="interpret")
        graph = traced.graph(*args)
        graph_def = self._graph_def(graph)
        if verbose:
            print(graph)
        self._add_event(self._pb["event"].Event(graph_def=graph_def.SerializeToString()), None)

    def _graph_def(self, graph):
        from ..ir import Var
        pb = self._pb
        names = {}
        nodes = []

        def node_def(name, op, inputs, var, extra):
            shape = pb["shape"].TensorShapeProto(
                dim=[pb["shape"].TensorShapeProto.Dim(size=int(d)) for d in var.shape])
            attr = {"_output_shapes": pb["attr_value"].AttrValue(
                        list=pb["attr_value"].AttrValue.ListValue(shape=[shape])),
                    "dtype": pb["attr_value"].AttrValue(s=var.type.encode())}
            for k, v in extra.items():
                attr[k] = pb["attr_value"].AttrValue(s=str(v).encode())
            return pb["node_def"].NodeDef(name=name, op=op, input=inputs, attr=attr)

        for var, label in zip(graph.inputs, graph.input_names):
            names[var.id] = f"input/{label}"
            nodes.append(node_def(names[var.id], "input", [], var, {}))
        for node in graph.nodes:
            name = f"{node.op}_{node.out.id}"
            names[node.out.id] = name
            inputs = [names[x.id] for x in node.inputs if isinstance(x, Var)]
            extra = {k: v for k, v in node.attrs if k != "body"}
            if node.loc:
                extra["source"] = node.loc
            nodes.append(node_def(name, node.op, inputs, node.out, extra))
        for i, x in enumerate(graph.outputs):
            if isinstance(x, Var):
                nodes.append(node_def(f"output/{i}", "output", [names[x.id]], x, {}))
        return pb["graph"].GraphDef(node=nodes)

    def flush(self):
        for w in self._writers.values():
            w.flush()

    def close(self):
        for w in self._writers.values():
            w.flush()
            w.close()
        self._writers.clear()
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


__all__ = ["SummaryWriter"]
