"""Recurrent layers: RNN, LSTM, GRU and their single-step cells, as in torch (gate order
LSTM i,f,g,o; GRU r,z,n; parameter names ``weight_ih_l0``, ``bias_hh_l1_reverse``, ...).

The time loop runs in Python over the (fixed) sequence length, so a traced forward unrolls it;
the input projection of all time steps is one matmul before the loop.

>>> lstm = tracejit.nn.LSTM(3, 4, batch_first=True)
>>> out, (h, c) = lstm(tracejit.ones(2, 5, 3))
>>> out.shape, h.shape
((2, 5, 4), (1, 2, 4))
"""

from __future__ import annotations

import math
import numbers
import warnings

from ..creation import empty, zeros
from ..errors import ShapeError
from ..tensor import cat, stack
from . import functional as F
from . import init
from .module import Module
from .parameter import Parameter

_GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


def _lstm_cell(gi, gh, h, c):
    i, f, g, o = (gi + gh).chunk(4, -1)
    c = f.sigmoid() * c + i.sigmoid() * g.tanh()
    return o.sigmoid() * c.tanh(), c


def _gru_cell(gi, gh, h):
    i_r, i_z, i_n = gi.chunk(3, -1)
    h_r, h_z, h_n = gh.chunk(3, -1)
    r = (i_r + h_r).sigmoid()
    z = (i_z + h_z).sigmoid()
    n = (i_n + r * h_n).tanh()
    return (1 - z) * n + z * h


def _rnn_cell(gi, gh, h, relu):
    pre = gi + gh
    return pre.relu() if relu else pre.tanh()


def _project(x, weight, bias):
    y = x @ weight.T
    return y if bias is None else y + bias


def _step(mode, gi, h, c, w_hh, b_hh):
    """One time step from the input projection ``gi``; returns the new (h, c)."""
    gh = _project(h, w_hh, b_hh)
    if mode == "LSTM":
        return _lstm_cell(gi, gh, h, c)
    if mode == "GRU":
        return _gru_cell(gi, gh, h), None
    return _rnn_cell(gi, gh, h, mode == "RNN_RELU"), None


def _fmt_shape(shape) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


class RNNBase(Module):
    """The multi-layer, optionally bidirectional recurrence shared by RNN, LSTM and GRU."""

    def __init__(self, mode: str, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, proj_size: int = 0, device=None,
                 dtype=None) -> None:
        super().__init__()
        if isinstance(dropout, bool) or not isinstance(dropout, numbers.Number) or \
                not 0 <= dropout <= 1:
            raise ValueError("dropout should be a number in range [0, 1] representing the "
                             "probability of an element being zeroed")
        if dropout > 0 and num_layers == 1:
            warnings.warn(f"dropout option adds dropout after all but last recurrent layer, so "
                          f"non-zero dropout expects num_layers greater than 1, but got "
                          f"dropout={dropout} and num_layers={num_layers}", stacklevel=3)
        if not isinstance(hidden_size, int) or hidden_size <= 0:
            raise ValueError(f"hidden_size must be a positive integer, got {hidden_size!r}")
        if not isinstance(num_layers, int) or num_layers <= 0:
            raise ValueError(f"num_layers must be a positive integer, got {num_layers!r}")
        if proj_size:
            raise NotImplementedError("LSTM: proj_size > 0 (projected hidden state) is not "
                                      "supported; add a Linear layer on the output instead")
        self.mode = mode
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = proj_size
        directions = 2 if bidirectional else 1
        gate = _GATES[mode] * hidden_size
        names = []
        for layer in range(num_layers):
            for direction in range(directions):
                n_in = input_size if layer == 0 else hidden_size * directions
                sfx = f"_l{layer}" + ("_reverse" if direction else "")
                shapes = [("weight_ih" + sfx, (gate, n_in)), ("weight_hh" + sfx,
                                                               (gate, hidden_size))]
                if bias:
                    shapes += [("bias_ih" + sfx, (gate,)), ("bias_hh" + sfx, (gate,))]
                for name, shape in shapes:
                    setattr(self, name, Parameter(empty(shape, dtype=dtype, device=device)))
                    names.append(name)
        self._flat_weights_names = names
        self.reset_parameters()

    def reset_parameters(self) -> None:
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for w in self.parameters():
            init.uniform_(w, -stdv, stdv)

    def _params(self, layer: int, direction: int):
        sfx = f"_l{layer}" + ("_reverse" if direction else "")
        get = self.__dict__.get
        return (get("weight_ih" + sfx), get("weight_hh" + sfx), get("bias_ih" + sfx),
                get("bias_hh" + sfx))

    def _initial_state(self, hx, x, batched: bool):
        directions = 2 if self.bidirectional else 1
        n = x.shape[1]
        shape = (self.num_layers * directions, n, self.hidden_size)
        lstm = self.mode == "LSTM"
        if hx is None:
            h0 = zeros(shape, dtype=x.dtype)
            return (h0, zeros(shape, dtype=x.dtype)) if lstm else (h0, None)
        states = tuple(hx) if lstm else (hx,)
        if lstm and len(states) != 2:
            raise ValueError("LSTM: hx must be a tuple (h_0, c_0)")
        want = 3 if batched else 2
        if any(s.ndim != want for s in states):
            got = ", ".join(f"{s.ndim}-D" for s in states)
            what = "hx and cx" if lstm else "hx"
            kind = "batched 3-D" if batched else "unbatched 2-D"
            raise ShapeError(f"{type(self).__name__}: for {kind} input, {what} should also be "
                             f"{want}-D but got ({got}) tensors")
        if not batched:
            states = tuple(s.unsqueeze(1) for s in states)
        for i, s in enumerate(states):
            if tuple(s.shape) != shape:
                name = ("h_0", "c_0")[i]
                raise ShapeError(f"{type(self).__name__}: expected {name} of size "
                                 f"{_fmt_shape(shape)}, got {_fmt_shape(s.shape)}")
        return states if lstm else (states[0], None)

    def _direction(self, x, layer, direction, h, c):
        w_ih, w_hh, b_ih, b_hh = self._params(layer, direction)
        gi = _project(x, w_ih, b_ih)  # every time step at once: (L, N, gates * H)
        steps = x.shape[0]
        outs = [None] * steps
        for t in (reversed(range(steps)) if direction else range(steps)):
            h, c = _step(self.mode, gi[t], h, c, w_hh, b_hh)
            outs[t] = h
        return stack(outs, 0), h, c

    def forward(self, input, hx=None):
        name = type(self).__name__
        if input.ndim not in (2, 3):
            raise ValueError(f"{name}: Expected input to be 2D or 3D, got {input.ndim}D instead")
        batched = input.ndim == 3
        x = input
        if not batched:
            x = x.unsqueeze(1)
        elif self.batch_first:
            x = x.transpose(0, 1)  # (L, N, H_in) below
        if x.shape[-1] != self.input_size:
            raise ShapeError(f"{name}: input.size(-1) must be equal to input_size. Expected "
                             f"{self.input_size}, got {x.shape[-1]}")
        if x.shape[0] == 0:
            raise ShapeError(f"{name}: the input sequence is empty (length 0)")
        h0, c0 = self._initial_state(hx, x, batched)
        directions = 2 if self.bidirectional else 1
        hs, cs = [], []
        for layer in range(self.num_layers):
            outs = []
            for d in range(directions):
                k = layer * directions + d
                out, h, c = self._direction(x, layer, d, h0[k], None if c0 is None else c0[k])
                outs.append(out)
                hs.append(h)
                cs.append(c)
            x = outs[0] if directions == 1 else cat(outs, 2)
            if self.dropout and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, True)
        h_n = stack(hs, 0)
        c_n = stack(cs, 0) if c0 is not None else None
        if not batched:
            x = x.squeeze(1)
            h_n = h_n.squeeze(1)
            c_n = c_n.squeeze(1) if c_n is not None else None
        elif self.batch_first:
            x = x.transpose(0, 1)
        return (x, (h_n, c_n)) if self.mode == "LSTM" else (x, h_n)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s


class RNN(RNNBase):
    """Elman RNN: ``h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh)`` (or relu)."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, device=None,
                 dtype=None) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or "
                             f"'relu'.")
        self.nonlinearity = nonlinearity
        super().__init__("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", input_size,
                         hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         device=device, dtype=dtype)


class LSTM(RNNBase):
    """Long short-term memory; ``lstm(x, (h_0, c_0))`` returns ``(output, (h_n, c_n))``."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, device=None, dtype=None) -> None:
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, proj_size, device, dtype)


class GRU(RNNBase):
    """Gated recurrent unit; ``gru(x, h_0)`` returns ``(output, h_n)``."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None) -> None:
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, device=device, dtype=dtype)


class _CellBase(Module):
    mode = ""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None,
                 dtype=None) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        gate = _GATES[self.mode] * hidden_size
        self.weight_ih = Parameter(empty(gate, input_size, dtype=dtype, device=device))
        self.weight_hh = Parameter(empty(gate, hidden_size, dtype=dtype, device=device))
        if bias:
            self.bias_ih = Parameter(empty(gate, dtype=dtype, device=device))
            self.bias_hh = Parameter(empty(gate, dtype=dtype, device=device))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    reset_parameters = RNNBase.reset_parameters

    def _prepare(self, input, hx, n_states):
        name = type(self).__name__
        if input.ndim not in (1, 2):
            raise ValueError(f"{name}: Expected input to be 1D or 2D, got {input.ndim}D instead")
        if input.shape[-1] != self.input_size:
            raise ShapeError(f"{name}: input has inconsistent input_size: got {input.shape[-1]} "
                             f"expected {self.input_size}")
        batched = input.ndim == 2
        x = input if batched else input.unsqueeze(0)
        shape = (x.shape[0], self.hidden_size)
        if hx is None:
            states = tuple(zeros(shape, dtype=x.dtype) for _ in range(n_states))
        else:
            states = tuple(hx) if n_states == 2 else (hx,)
            if not batched:
                states = tuple(s.unsqueeze(0) for s in states)
            for s in states:
                if tuple(s.shape) != shape:
                    raise ShapeError(f"{name}: expected hidden state of size {_fmt_shape(shape)}, "
                                     f"got {_fmt_shape(s.shape)}")
        return x, states, batched

    def _cell(self, input, hx, n_states):
        x, states, batched = self._prepare(input, hx, n_states)
        gi = _project(x, self.weight_ih, self.bias_ih)
        h, c = _step(self.mode, gi, states[0], states[1] if n_states == 2 else None,
                     self.weight_hh, self.bias_hh)
        if not batched:
            h = h.squeeze(0)
            c = c.squeeze(0) if c is not None else None
        return (h, c) if n_states == 2 else h

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        return s


class LSTMCell(_CellBase):
    """One LSTM step: ``cell(x, (h, c))`` returns ``(h', c')``."""

    mode = "LSTM"

    def forward(self, input, hx=None):
        return self._cell(input, hx, 2)


class GRUCell(_CellBase):
    """One GRU step: ``cell(x, h)`` returns ``h'``."""

    mode = "GRU"

    def forward(self, input, hx=None):
        return self._cell(input, hx, 1)


class RNNCell(_CellBase):
    """One Elman RNN step with tanh (or relu)."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 nonlinearity: str = "tanh", device=None, dtype=None) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity: {nonlinearity}")
        self.nonlinearity = nonlinearity
        self.mode = "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"
        super().__init__(input_size, hidden_size, bias, device, dtype)

    def forward(self, input, hx=None):
        return self._cell(input, hx, 1)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s + (f", nonlinearity={self.nonlinearity}" if self.nonlinearity != "tanh" else "")
