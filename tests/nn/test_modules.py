"""tracejit.nn modules: registration and state dicts (torch's key names), train/eval, forward
values against numpy formulas, and gradchecks in float64 through each parametrised layer."""

from __future__ import annotations

import collections
import math

import numpy as np
import pytest

import tracejit as tj
from tracejit import nn
from tracejit.nn import init

from ..conftest import assert_close, data, gradcheck


def _np(t):
    return t.detach().numpy()


def _sigmoid(a):
    return 1 / (1 + np.exp(-a))


class Block(nn.Module):
    """A small custom module: a parameter, a buffer, a child and a list of children."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(tj.ones(2))
        self.register_buffer("count", tj.zeros(1))
        self.fc = nn.Linear(2, 2)
        self.heads = nn.ModuleList([nn.Linear(2, 1), nn.Linear(2, 1, bias=False)])

    def forward(self, x):
        h = self.fc(x) * self.scale
        return sum(head(h) for head in self.heads)


# ============================================================================ Parameter


def test_parameter_is_a_leaf_tensor_requiring_grad_sharing_memory():
    base = tj.zeros(3)
    p = nn.Parameter(base)
    assert isinstance(p, tj.Tensor) and p.requires_grad and p.is_leaf
    base._data[0] = 5.0
    assert p[0].item() == 5.0  # shares memory, as torch.nn.Parameter(t)
    assert not nn.Parameter(tj.zeros(2), requires_grad=False).requires_grad
    assert repr(p).startswith("Parameter containing:\ntensor([5., 0., 0.], requires_grad=True)")
    assert type(p * 2) is tj.Tensor  # results of ops are plain tensors


# ============================================================================ registration


def test_named_parameters_order_counts_and_buffers():
    m = Block()
    names = [n for n, _ in m.named_parameters()]
    assert names == ["scale", "fc.weight", "fc.bias", "heads.0.weight", "heads.0.bias",
                     "heads.1.weight"]
    assert len(list(m.parameters())) == 6
    assert [n for n, _ in m.named_parameters(recurse=False)] == ["scale"]
    assert [n for n, _ in m.named_buffers()] == ["count"]
    assert [n for n, _ in m.named_children()] == ["fc", "heads"]
    assert [n for n, _ in m.named_modules()] == ["", "fc", "heads", "heads.0", "heads.1"]
    assert sum(p.numel() for p in m.parameters()) == 2 + 6 + 3 + 2
    assert m.get_submodule("heads.1") is m.heads[1]
    assert m.get_parameter("heads.0.bias") is m.heads[0].bias
    # parameters are plain attributes (tracing finds them by walking vars())
    assert vars(m)["scale"] is m.scale and vars(m.heads)["0"] is m.heads[0]


def test_shared_parameters_and_modules_listed_once():
    lin = nn.Linear(2, 2)
    seq = nn.Sequential(lin, nn.ReLU(), lin)
    assert [n for n, _ in seq.named_parameters()] == ["0.weight", "0.bias"]
    assert len(list(seq.modules())) == 3
    # the state dict names a shared module under each of its names, as torch does
    assert list(seq.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]


def test_assignment_rules():
    m = Block()
    with pytest.raises(TypeError, match=r"cannot assign 'Tensor' as parameter 'scale' "
                                         r"\(tracejit.nn.Parameter or None expected\)"):
        m.scale = tj.ones(2)
    with pytest.raises(TypeError, match="cannot assign 'int' as buffer 'count'"):
        m.count = 3
    m.count = tj.ones(1)  # a tensor replaces a buffer
    assert [n for n, _ in m.named_buffers()] == ["count"]
    m.scale = None
    assert [n for n, _ in m.named_parameters(recurse=False)] == []
    m.scale = nn.Parameter(tj.ones(2))
    m.other = 3  # plain attributes stay plain
    m.other = nn.Parameter(tj.ones(1))  # ...until a parameter replaces them
    assert [n for n, _ in m.named_parameters(recurse=False)] == ["scale", "other"]
    del m.other
    assert [n for n, _ in m.named_parameters(recurse=False)] == ["scale"]
    with pytest.raises(KeyError, match="attribute 'fc' already exists"):
        m.register_buffer("fc", tj.zeros(1))
    with pytest.raises(KeyError, match=r'parameter name can.*t contain "\."'):
        m.register_parameter("a.b", None)
    with pytest.raises(TypeError, match="cannot assign 'Tensor' object to parameter 'w'"):
        m.register_parameter("w", tj.ones(1))


def test_assigning_before_init_and_missing_forward():
    class Early(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(tj.ones(1))

    with pytest.raises(AttributeError, match=r"before Module.__init__\(\) call"):
        Early()
    with pytest.raises(NotImplementedError, match=r'Module \[Module\] is missing the required '
                                                  r'"forward" function'):
        nn.Module()(tj.ones(1))


def test_train_eval_propagate_and_apply_order():
    m = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Dropout(), nn.BatchNorm1d(2)))
    assert m.training and all(c.training for c in m.modules())
    assert m.eval() is m
    assert not any(c.training for c in m.modules())
    m.train()
    assert all(c.training for c in m.modules())
    seen = []
    m.apply(lambda mod: seen.append(type(mod).__name__))
    assert seen == ["Linear", "Dropout", "BatchNorm1d", "Sequential", "Sequential"]


@pytest.mark.parametrize("set_to_none", [True, False])
def test_zero_grad(set_to_none):
    m = nn.Linear(3, 2)
    m(tj.ones(4, 3)).sum().backward()
    assert_close(m.bias.grad, np.full(2, 4.0, np.float32))
    m.zero_grad(set_to_none=set_to_none)
    for p in m.parameters():
        if set_to_none:
            assert p.grad is None
        else:
            assert_close(p.grad, np.zeros(p.shape, np.float32))


def test_to_dtype_keeps_parameter_objects_and_integer_buffers():
    m = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    w = m[0].weight
    before = _np(w).copy()
    assert m.to(tj.float64) is m
    assert m[0].weight is w and w.dtype == np.float64 and w.requires_grad
    np.testing.assert_array_equal(_np(w), before)
    assert m[1].running_mean.dtype == np.float64
    assert m[1].num_batches_tracked.dtype == np.int64
    assert m(tj.ones(4, 2, dtype=tj.float64)).dtype == np.float64
    assert m.float()[0].weight.dtype == np.float32
    with pytest.raises(TypeError, match="only accepts floating point dtypes"):
        m.to(tj.int64)
    if not tj.cuda.is_available():  # with a GPU, tests/cuda/test_device.py covers it
        with pytest.raises(tj.cuda.CudaUnavailableError, match="CUDA is not available"):
            m.to("cuda")


def test_repr_like_torch():
    m = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, bias=False), nn.ReLU(),
                      nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), nn.LSTM(3, 4, num_layers=2))
    assert repr(m) == (
        "Sequential(\n"
        "  (0): Conv2d(1, 2, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=False)\n"
        "  (1): ReLU()\n"
        "  (2): Sequential(\n"
        "    (0): Flatten(start_dim=1, end_dim=-1)\n"
        "    (1): Linear(in_features=4, out_features=2, bias=True)\n"
        "  )\n"
        "  (3): LSTM(3, 4, num_layers=2)\n"
        ")")
    assert repr(nn.BatchNorm2d(3)) == ("BatchNorm2d(3, eps=1e-05, momentum=0.1, affine=True, "
                                       "bias=True, track_running_stats=True)")
    assert repr(nn.LayerNorm(4)) == "LayerNorm((4,), eps=1e-05, elementwise_affine=True, bias=True)"
    assert repr(nn.Embedding(5, 2, padding_idx=0)) == "Embedding(5, 2, padding_idx=0)"
    assert repr(nn.GELU("tanh")) == "GELU(approximate='tanh')"
    assert repr(nn.MaxPool2d(2)) == ("MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, "
                                     "ceil_mode=False)")
    assert repr(nn.Dropout(0.2)) == "Dropout(p=0.2, inplace=False)"


# ============================================================================ containers


def test_sequential_indexing_len_iteration():
    a, b, c = nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)
    seq = nn.Sequential(a, b, c)
    assert len(seq) == 3 and list(seq) == [a, b, c]
    assert seq[0] is a and seq[-1] is c
    sub = seq[1:]
    assert isinstance(sub, nn.Sequential) and list(sub) == [b, c]
    assert [n for n, _ in sub.named_children()] == ["1", "2"]  # slices keep names, as torch
    x = tj.tensor(data((4, 2)))
    assert_close(seq(x), _np(c(b(a(x)))))
    with pytest.raises(IndexError, match="index 3 is out of range"):
        seq[3]
    del seq[1]
    assert list(seq) == [a, c] and [n for n, _ in seq.named_children()] == ["0", "1"]
    seq.append(nn.Tanh())
    assert len(seq) == 3
    named = nn.Sequential(collections.OrderedDict([("enc", a), ("act", b)]))
    assert named.enc is a and list(named.state_dict()) == ["enc.weight", "enc.bias"]


def test_module_list():
    ml = nn.ModuleList([nn.Linear(1, 1)])
    ml.append(nn.Linear(1, 2))
    ml.extend([nn.Linear(2, 2)])
    ml.insert(0, nn.Tanh())
    assert len(ml) == 4 and isinstance(ml[0], nn.Tanh) and ml[-1].out_features == 2
    assert [n for n, _ in ml.named_parameters()] == [
        "1.weight", "1.bias", "2.weight", "2.bias", "3.weight", "3.bias"]
    del ml[0]
    assert [n for n, _ in ml.named_children()] == ["0", "1", "2"]
    assert isinstance(ml[1:], nn.ModuleList) and len(ml[1:]) == 2
    with pytest.raises(IndexError, match="index -4 is out of range"):
        ml[-4]
    with pytest.raises(NotImplementedError, match="missing the required"):
        ml(tj.ones(1))


# ============================================================================ state dicts

_LSTM2 = [f"{k}_l{i}" for i in (0, 1) for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]

# Key lists (and shapes) as torch documents them for the same modules.
STATE_KEYS = [
    (lambda: nn.Linear(3, 2), {"weight": (2, 3), "bias": (2,)}),
    (lambda: nn.Conv2d(4, 6, (3, 2), groups=2, bias=False), {"weight": (6, 2, 3, 2)}),
    (lambda: nn.BatchNorm2d(3), {"weight": (3,), "bias": (3,), "running_mean": (3,),
                                 "running_var": (3,), "num_batches_tracked": ()}),
    (lambda: nn.BatchNorm1d(3, affine=False), {"running_mean": (3,), "running_var": (3,),
                                               "num_batches_tracked": ()}),
    (lambda: nn.BatchNorm1d(3, track_running_stats=False), {"weight": (3,), "bias": (3,)}),
    (lambda: nn.LayerNorm((2, 3)), {"weight": (2, 3), "bias": (2, 3)}),
    (lambda: nn.LayerNorm(3, elementwise_affine=False), {}),
    (lambda: nn.Embedding(5, 2), {"weight": (5, 2)}),
    (lambda: nn.LSTM(3, 4, num_layers=2),
     dict(zip(_LSTM2, [(16, 3), (16, 4), (16,), (16,), (16, 4), (16, 4), (16,), (16,)]))),
    (lambda: nn.GRU(3, 2, bidirectional=True, bias=False),
     {"weight_ih_l0": (6, 3), "weight_hh_l0": (6, 2), "weight_ih_l0_reverse": (6, 3),
      "weight_hh_l0_reverse": (6, 2)}),
    (lambda: nn.LSTMCell(3, 2), {"weight_ih": (8, 3), "weight_hh": (8, 2), "bias_ih": (8,),
                                 "bias_hh": (8,)}),
    (lambda: nn.CrossEntropyLoss(weight=tj.ones(3)), {"weight": (3,)}),
    (lambda: nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Sequential(nn.BatchNorm1d(3))),
     {"0.weight": (3, 2), "0.bias": (3,), "2.0.weight": (3,), "2.0.bias": (3,),
      "2.0.running_mean": (3,), "2.0.running_var": (3,), "2.0.num_batches_tracked": ()}),
]


@pytest.mark.parametrize("make,expected", STATE_KEYS)
def test_state_dict_keys_and_shapes_as_torch(make, expected):
    sd = make().state_dict()
    assert list(sd) == list(expected)
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected
    assert all(not v.requires_grad for v in sd.values())


def test_state_dict_shares_memory_and_non_persistent_buffers_are_left_out():
    m = nn.Linear(2, 2)
    m.register_buffer("tmp", tj.zeros(1), persistent=False)
    sd = m.state_dict()
    assert list(sd) == ["weight", "bias"] and [n for n, _ in m.named_buffers()] == ["tmp"]
    sd["bias"]._data[0] = 7.0
    assert m.bias[0].item() == 7.0
    assert sd["weight"].requires_grad is False
    assert m.state_dict(keep_vars=True)["weight"] is m.weight


def test_load_state_dict_round_trip_in_place():
    src = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    src(tj.tensor(data((4, 2))))  # moves the running stats
    dst = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    w = dst[0].weight
    result = dst.load_state_dict(src.state_dict())
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert dst[0].weight is w  # copied in place: optimizers keep their references
    for (k, a), (_, b) in zip(src.state_dict().items(), dst.state_dict().items()):
        np.testing.assert_array_equal(_np(a), _np(b), err_msg=k)
    assert dst[1].num_batches_tracked.item() == 1
    # numpy arrays are accepted (and cast to the parameter's dtype)
    arrays = {k: _np(v).astype(np.float64) if v.dtype.kind == "f" else _np(v)
              for k, v in src.state_dict().items()}
    dst.load_state_dict(arrays)
    assert dst[0].weight.dtype == np.float32
    x = tj.tensor(data((4, 2)))
    assert_close(dst.eval()(x), _np(src.eval()(x)))


def test_deepcopy_gives_independent_parameters():
    import copy
    m = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    c = copy.deepcopy(m)
    assert isinstance(c[0].weight, nn.Parameter) and c[0].weight.requires_grad
    assert [n for n, _ in c.named_parameters()] == [n for n, _ in m.named_parameters()]
    np.testing.assert_array_equal(_np(c[0].weight), _np(m[0].weight))
    with tj.no_grad():
        c[0].weight.zero_()
    assert _np(m[0].weight).any()


def test_load_state_dict_strict_errors():
    m = nn.Linear(2, 2)
    sd = {"weight": tj.zeros(2, 2), "extra": tj.zeros(1)}
    with pytest.raises(RuntimeError, match=r'(?s)Error\(s\) in loading state_dict for Linear:.*'
                                           r'Missing key\(s\) in state_dict: "bias"\..*'
                                           r'Unexpected key\(s\) in state_dict: "extra"\.'):
        m.load_state_dict(sd)
    result = m.load_state_dict(sd, strict=False)
    assert result.missing_keys == ["bias"] and result.unexpected_keys == ["extra"]
    assert_close(m.weight, np.zeros((2, 2), np.float32))
    # a shape mismatch is an error even when not strict
    with pytest.raises(RuntimeError, match=r"size mismatch for weight: copying a param with shape "
                                           r"\(3, 2\) from checkpoint, the shape in current model "
                                           r"is \(2, 2\)"):
        m.load_state_dict({"weight": tj.zeros(3, 2), "bias": tj.zeros(2)}, strict=False)
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "0.running_mean"'):
        nn.Sequential(nn.BatchNorm1d(2)).load_state_dict(
            {"0.weight": tj.ones(2), "0.bias": tj.ones(2), "0.running_var": tj.ones(2),
             "0.num_batches_tracked": tj.tensor(0)})


# ============================================================================ initialisation


def test_default_init_bounds_and_reproducible():
    tj.manual_seed(3)
    a = nn.Linear(50, 40)
    tj.manual_seed(3)
    b = nn.Linear(50, 40)
    np.testing.assert_array_equal(_np(a.weight), _np(b.weight))
    bound = 1 / math.sqrt(50)  # kaiming_uniform(a=sqrt(5)) and the bias rule both give this
    for p in (a.weight, a.bias):
        v = _np(p)
        assert np.abs(v).max() <= bound and np.abs(v).max() > 0.8 * bound
    assert abs(_np(a.weight).mean()) < 0.1 * bound
    conv = nn.Conv2d(4, 6, 3, groups=2)  # fan_in = 4 / 2 * 3 * 3
    assert np.abs(_np(conv.weight)).max() <= 1 / math.sqrt(18)
    assert np.abs(_np(conv.bias)).max() <= 1 / math.sqrt(18)
    lstm = nn.LSTM(3, 16, num_layers=2)
    assert all(np.abs(_np(p)).max() <= 0.25 for p in lstm.parameters())
    emb = nn.Embedding(400, 10, padding_idx=-1)
    w = _np(emb.weight)
    assert emb.padding_idx == 399 and not w[399].any()
    assert abs(w[:399].std() - 1) < 0.05 and abs(w.mean()) < 0.05
    ln = nn.LayerNorm(3)
    assert_close(ln.weight, np.ones(3, np.float32))
    assert_close(ln.bias, np.zeros(3, np.float32))
    assert all(p.is_leaf and p.grad_fn is None for p in emb.parameters())


def test_init_functions():
    w = tj.empty(30, 20, dtype=tj.float64)
    assert init.xavier_uniform_(w, gain=2.0) is w
    bound = 2.0 * math.sqrt(6 / 50)
    assert np.abs(_np(w)).max() <= bound and np.abs(_np(w)).max() > 0.9 * bound
    init.kaiming_uniform_(w, nonlinearity="relu")
    assert np.abs(_np(w)).max() <= math.sqrt(2) * math.sqrt(3 / 20)
    init.normal_(w, 3.0, 0.01)
    assert abs(_np(w).mean() - 3.0) < 0.01
    init.uniform_(w, 2.0, 2.5)
    assert _np(w).min() >= 2.0 and _np(w).max() < 2.5
    init.zeros_(w)
    assert not _np(w).any()
    init.ones_(w)
    assert (_np(w) == 1).all()
    assert init.calculate_gain("relu") == math.sqrt(2)
    assert init.calculate_gain("leaky_relu", math.sqrt(5)) == math.sqrt(1 / 3)
    p = nn.Parameter(tj.zeros(4, 4, dtype=tj.float64))
    init.kaiming_uniform_(p)  # parameters are filled without recording a gradient
    assert p.is_leaf and p.requires_grad
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        init.xavier_uniform_(tj.zeros(3))


# ============================================================================ forward values


def ref_conv2d(x, w, b, stride, padding, dilation, groups):
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2))
    oh = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (wd + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    og = o // groups
    out = np.zeros((n, o, oh, ow))
    for g in range(groups):
        for i in range(oh):
            for j in range(ow):
                r, s = i * stride[0], j * stride[1]
                patch = xp[:, g * cg:(g + 1) * cg, r:r + dilation[0] * (kh - 1) + 1:dilation[0],
                           s:s + dilation[1] * (kw - 1) + 1:dilation[1]]
                out[:, g * og:(g + 1) * og, i, j] = np.einsum("nckl,ockl->no", patch,
                                                              w[g * og:(g + 1) * og])
    return out + (0 if b is None else b[None, :, None, None])


def test_linear_forward():
    m = nn.Linear(3, 2)
    x = data((4, 3))
    assert_close(m(tj.tensor(x)), x @ _np(m.weight).T + _np(m.bias), rtol=1e-5)
    m = nn.Linear(3, 2, bias=False)
    x = data((2, 5, 3))
    assert m.bias is None
    assert_close(m(tj.tensor(x)), x @ _np(m.weight).T, rtol=1e-5)


@pytest.mark.parametrize("kwargs", [
    dict(stride=1, padding=0, dilation=1, groups=1),
    dict(stride=2, padding=1, dilation=1, groups=2),
    dict(stride=(1, 2), padding=(2, 1), dilation=2, groups=1, bias=False),
])
def test_conv2d_forward(kwargs):
    m = nn.Conv2d(2, 4, 3, dtype=tj.float64, **kwargs)
    x = data((2, 2, 6, 5), np.float64)
    k = {name: (v, v) if isinstance(v, int) else v for name, v in kwargs.items()
         if name != "bias"}
    b = None if m.bias is None else _np(m.bias)
    want = ref_conv2d(x, _np(m.weight), b, k["stride"], k["padding"], k["dilation"],
                      kwargs["groups"])
    assert_close(m(tj.tensor(x)), want, rtol=1e-10, atol=1e-12)


def test_conv2d_validation():
    with pytest.raises(ValueError, match="in_channels must be divisible by groups"):
        nn.Conv2d(3, 4, 1, groups=2)
    with pytest.raises(ValueError, match="padding='same' is not supported for strided"):
        nn.Conv2d(2, 2, 3, stride=2, padding="same")
    with pytest.raises(NotImplementedError, match="padding_mode='reflect' is not supported"):
        nn.Conv2d(2, 2, 3, padding_mode="reflect")
    assert nn.Conv2d(2, 3, 3, padding="same")(tj.ones(1, 2, 5, 4)).shape == (1, 3, 5, 4)


def test_pooling_and_flatten():
    x = data((2, 3, 4, 6))
    windows = x.reshape(2, 3, 2, 2, 3, 2)
    assert_close(nn.MaxPool2d(2)(tj.tensor(x)), windows.max(axis=(3, 5)))
    assert_close(nn.AvgPool2d(2)(tj.tensor(x)), windows.mean(axis=(3, 5)), rtol=1e-6)
    assert_close(nn.MaxPool2d(3, stride=1)(tj.tensor(x)).shape, (2, 3, 2, 4), check_dtype=False)
    assert nn.Flatten()(tj.tensor(x)).shape == (2, 72)
    assert nn.Flatten(0, 2)(tj.tensor(x)).shape == (24, 6)


@pytest.mark.parametrize("module,ref", [
    (nn.ReLU(), lambda a: np.maximum(a, 0)),
    (nn.Tanh(), np.tanh),
    (nn.Sigmoid(), _sigmoid),
    (nn.GELU(), lambda a: 0.5 * a * (1 + np.vectorize(math.erf)(a / math.sqrt(2)))),
    (nn.GELU("tanh"), lambda a: 0.5 * a * (1 + np.tanh(math.sqrt(2 / math.pi)
                                                       * (a + 0.044715 * a ** 3)))),
    (nn.Softmax(dim=1), lambda a: np.exp(a) / np.exp(a).sum(1, keepdims=True)),
    (nn.Softmax(dim=-1), lambda a: np.exp(a) / np.exp(a).sum(-1, keepdims=True)),
    (nn.LogSoftmax(dim=1), lambda a: a - np.log(np.exp(a).sum(1, keepdims=True))),
    (nn.LeakyReLU(0.1), lambda a: np.where(a > 0, a, 0.1 * a)),
    (nn.SiLU(), lambda a: a * _sigmoid(a)),
    (nn.Identity(), lambda a: a),
])
def test_activations(module, ref):
    x = data((3, 4, 2), np.float64)
    assert_close(module(tj.tensor(x)), ref(x), rtol=1e-10, atol=1e-12)


def test_softmax_without_dim_warns_and_uses_torch_legacy_rule():
    x = data((2, 3), np.float64)
    with pytest.warns(UserWarning, match="Implicit dimension choice for softmax"):
        out = nn.Softmax()(tj.tensor(x))
    assert_close(out, np.exp(x) / np.exp(x).sum(1, keepdims=True))


def test_layer_norm_forward():
    m = nn.LayerNorm((2, 3), dtype=tj.float64)
    with tj.no_grad():
        m.weight.copy_(tj.tensor(data((2, 3), np.float64, seed=1)))
        m.bias.copy_(tj.tensor(data((2, 3), np.float64, seed=2)))
    x = data((4, 2, 3), np.float64)
    mean = x.mean((1, 2), keepdims=True)
    var = x.var((1, 2), keepdims=True)
    want = (x - mean) / np.sqrt(var + 1e-5) * _np(m.weight) + _np(m.bias)
    assert_close(m(tj.tensor(x)), want, rtol=1e-10, atol=1e-12)
    plain = nn.LayerNorm(3, elementwise_affine=False, eps=1e-3)
    x = data((5, 3))
    want = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-3)
    assert_close(plain(tj.tensor(x)), want, rtol=1e-5, atol=1e-6)


# ============================================================================ batch norm


def _bn_ref(x, dims, weight, bias, eps=1e-5):
    shape = [1] * x.ndim
    shape[1] = -1
    mean = x.mean(dims, keepdims=True)
    var = x.var(dims, keepdims=True)  # biased, for normalising
    return (x - mean) / np.sqrt(var + eps) * weight.reshape(shape) + bias.reshape(shape)


@pytest.mark.parametrize("cls,shape,dims", [
    (nn.BatchNorm1d, (5, 3), (0,)),
    (nn.BatchNorm1d, (4, 3, 2), (0, 2)),
    (nn.BatchNorm2d, (2, 3, 2, 3), (0, 2, 3)),
])
def test_batch_norm_training_and_eval(cls, shape, dims):
    m = cls(3, momentum=0.2, dtype=tj.float64)
    with tj.no_grad():
        m.weight.copy_(tj.tensor([1.0, 2.0, -0.5]))
        m.bias.copy_(tj.tensor([0.0, 0.5, 1.0]))
    w, b = _np(m.weight), _np(m.bias)
    x1, x2 = data(shape, np.float64, seed=1), data(shape, np.float64, seed=2) * 3 + 1
    n = x1.size // 3
    assert_close(m(tj.tensor(x1)), _bn_ref(x1, dims, w, b), rtol=1e-10, atol=1e-12)
    rm = 0.2 * x1.mean(dims)
    rv = 0.8 + 0.2 * x1.var(dims) * n / (n - 1)  # unbiased variance for the running estimate
    assert_close(m.running_mean, rm, rtol=1e-12, atol=1e-14)
    assert_close(m.running_var, rv, rtol=1e-12, atol=1e-14)
    m(tj.tensor(x2))
    rm = 0.8 * rm + 0.2 * x2.mean(dims)
    rv = 0.8 * rv + 0.2 * x2.var(dims, ddof=1)
    assert_close(m.running_mean, rm, rtol=1e-12, atol=1e-14)
    assert_close(m.running_var, rv, rtol=1e-12, atol=1e-14)
    assert m.num_batches_tracked.item() == 2 and m.num_batches_tracked.dtype == np.int64
    m.eval()
    bshape = (1, 3) + (1,) * (len(shape) - 2)
    want = (x1 - rm.reshape(bshape)) / np.sqrt(rv.reshape(bshape) + 1e-5) * w.reshape(bshape) \
        + b.reshape(bshape)
    assert_close(m(tj.tensor(x1)), want, rtol=1e-10, atol=1e-12)
    assert m.num_batches_tracked.item() == 2  # eval leaves the statistics alone
    assert_close(m.running_mean, rm, rtol=1e-12, atol=1e-14)


def test_batch_norm_cumulative_average_and_no_running_stats():
    m = nn.BatchNorm1d(2, momentum=None, dtype=tj.float64)
    xs = [data((4, 2), np.float64, seed=s) for s in range(3)]
    for x in xs:
        m(tj.tensor(x))
    assert_close(m.running_mean, np.mean([x.mean(0) for x in xs], 0), rtol=1e-12, atol=1e-14)
    assert_close(m.running_var, np.mean([x.var(0, ddof=1) for x in xs], 0), rtol=1e-12, atol=1e-14)
    m = nn.BatchNorm1d(2, track_running_stats=False, affine=False).eval()
    x = data((4, 2))
    assert m.running_mean is None
    assert_close(m(tj.tensor(x)), (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5), rtol=1e-5,
                 atol=1e-6)


def test_batch_norm_errors():
    with pytest.raises(ValueError, match=r"BatchNorm2d: expected 4D input \(got 3D input\)"):
        nn.BatchNorm2d(3)(tj.ones(2, 3, 4))
    with pytest.raises(ValueError, match=r"BatchNorm1d: expected 2D or 3D input \(got 4D"):
        nn.BatchNorm1d(3)(tj.ones(2, 3, 4, 4))
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        nn.BatchNorm1d(3)(tj.ones(1, 3))
    with pytest.raises(tj.ShapeError, match="expected 3 channels in dim 1"):
        nn.BatchNorm1d(3)(tj.ones(4, 2))
    nn.BatchNorm1d(3).eval()(tj.ones(1, 3))  # a single sample is fine in eval


def test_batch_norm_reset():
    m = nn.BatchNorm1d(2)
    m(tj.tensor(data((4, 2))))
    m.reset_running_stats()
    assert_close(m.running_mean, np.zeros(2, np.float32))
    assert_close(m.running_var, np.ones(2, np.float32))
    assert m.num_batches_tracked.item() == 0


# ============================================================================ dropout


def test_dropout_train_and_eval():
    m = nn.Dropout(0.3)
    x = tj.ones(100, 100)
    tj.manual_seed(5)
    y = _np(m(x))
    assert set(np.unique(y).tolist()) == {0.0, np.float32(1 / 0.7)}
    assert abs((y == 0).mean() - 0.3) < 0.03
    tj.manual_seed(5)
    np.testing.assert_array_equal(_np(m(x)), y)  # manual_seed reproduces the mask
    assert not np.array_equal(_np(m(x)), y)
    m.eval()
    np.testing.assert_array_equal(_np(m(x)), _np(x))
    seq = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5)).eval()
    z = tj.tensor(data((3, 4)))
    np.testing.assert_array_equal(_np(seq(z)), _np(seq[0](z)))
    with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1"):
        nn.Dropout(1.5)


def test_dropout_gradient_uses_the_mask():
    x = tj.ones(50, dtype=tj.float64, requires_grad=True)
    y = nn.Dropout(0.5)(x)
    y.sum().backward()
    np.testing.assert_array_equal(_np(x.grad), _np(y))


# ============================================================================ embedding


def test_embedding_forward_and_padding_gradient():
    m = nn.Embedding(5, 3, padding_idx=1)
    idx = tj.tensor([[0, 1], [4, 1]])
    out = m(idx)
    assert out.shape == (2, 2, 3)
    assert_close(out, _np(m.weight)[np.array([[0, 1], [4, 1]])])
    assert not _np(out)[:, 1].any()
    out.sum().backward()
    g = _np(m.weight.grad)
    assert_close(g[[0, 4]], np.ones((2, 3), np.float32))
    assert not g[[1, 2, 3]].any()  # the padding row gets no gradient
    with pytest.raises(tj.DTypeError, match="indices must be an integer tensor"):
        m(tj.ones(2))
    with pytest.raises(ValueError, match="Padding_idx must be within num_embeddings"):
        nn.Embedding(3, 2, padding_idx=3)
    with pytest.raises(NotImplementedError, match="max_norm is not supported"):
        nn.Embedding(3, 2, max_norm=1.0)


def test_embedding_from_pretrained():
    w = tj.tensor(data((4, 2)))
    m = nn.Embedding.from_pretrained(w)
    assert not m.weight.requires_grad
    assert_close(m(tj.tensor([3])), _np(w)[[3]])
    assert nn.Embedding.from_pretrained(w, freeze=False).weight.requires_grad


# ============================================================================ recurrent layers


def ref_rnn(mode, x, params, num_layers, bidirectional, h0, c0=None):
    """Numpy recurrence on (L, N, H_in) input with torch's gate order and parameter names."""
    dirs = 2 if bidirectional else 1
    hs, cs = [], []
    for layer in range(num_layers):
        outs = []
        for d in range(dirs):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            w_ih, w_hh = params["weight_ih" + sfx], params["weight_hh" + sfx]
            b_ih = params.get("bias_ih" + sfx, 0)
            b_hh = params.get("bias_hh" + sfx, 0)
            h = h0[layer * dirs + d]
            c = None if c0 is None else c0[layer * dirs + d]
            out = [None] * len(x)
            for t in (range(len(x) - 1, -1, -1) if d else range(len(x))):
                gi = x[t] @ w_ih.T + b_ih
                gh = h @ w_hh.T + b_hh
                if mode == "LSTM":
                    i, f, g, o = np.split(gi + gh, 4, -1)
                    c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
                    h = _sigmoid(o) * np.tanh(c)
                elif mode == "GRU":
                    (ir, iz, inn), (hr, hz, hn) = np.split(gi, 3, -1), np.split(gh, 3, -1)
                    r, z = _sigmoid(ir + hr), _sigmoid(iz + hz)
                    n = np.tanh(inn + r * hn)
                    h = (1 - z) * n + z * h
                else:
                    h = np.tanh(gi + gh)
                out[t] = h
            outs.append(np.stack(out))
            hs.append(h)
            cs.append(c)
        x = np.concatenate(outs, -1)
    return x, np.stack(hs), (np.stack(cs) if c0 is not None else None)


def _params(m):
    return {k: _np(v) for k, v in m.named_parameters()}


@pytest.mark.parametrize("cls,kwargs", [
    (nn.LSTM, dict(num_layers=2, batch_first=True)),
    (nn.LSTM, dict(bidirectional=True, bias=False)),
    (nn.GRU, dict(num_layers=2)),
    (nn.GRU, dict(bidirectional=True, batch_first=True)),
    (nn.RNN, dict(num_layers=1)),
])
def test_rnn_forward_against_numpy(cls, kwargs):
    m = cls(3, 4, dtype=tj.float64, **kwargs)
    mode = "LSTM" if cls is nn.LSTM else "GRU" if cls is nn.GRU else "RNN"
    dirs = 2 if kwargs.get("bidirectional") else 1
    layers = kwargs.get("num_layers", 1)
    x = data((2, 5, 3), np.float64)  # (N, L, H) if batch_first else (L, N, H)
    h0 = data((layers * dirs, 2 if kwargs.get("batch_first") else 5, 4), np.float64, seed=1)
    c0 = data(h0.shape, np.float64, seed=2)
    xs = x.transpose(1, 0, 2) if kwargs.get("batch_first") else x
    want, h_n, c_n = ref_rnn(mode, xs, _params(m), layers, dirs == 2, h0,
                             c0 if mode == "LSTM" else None)
    if kwargs.get("batch_first"):
        want = want.transpose(1, 0, 2)
    hx = (tj.tensor(h0), tj.tensor(c0)) if mode == "LSTM" else tj.tensor(h0)
    out, state = m(tj.tensor(x), hx)
    assert_close(out, want, rtol=1e-10, atol=1e-12)
    if mode == "LSTM":
        assert_close(state[0], h_n, rtol=1e-10, atol=1e-12)
        assert_close(state[1], c_n, rtol=1e-10, atol=1e-12)
    else:
        assert_close(state, h_n, rtol=1e-10, atol=1e-12)


def test_rnn_default_state_and_unbatched_input():
    m = nn.LSTM(3, 2, num_layers=2, dtype=tj.float64)
    x = data((4, 3), np.float64)  # unbatched (L, H_in)
    want, h_n, c_n = ref_rnn("LSTM", x[:, None], _params(m), 2, False, np.zeros((2, 1, 2)),
                             np.zeros((2, 1, 2)))
    out, (h, c) = m(tj.tensor(x))
    assert out.shape == (4, 2) and h.shape == (2, 2) and c.shape == (2, 2)
    assert_close(out, want[:, 0], rtol=1e-10, atol=1e-12)
    assert_close(c, c_n[:, 0], rtol=1e-10, atol=1e-12)
    out2, _ = m(tj.tensor(x), (tj.tensor(np.zeros((2, 2))), tj.tensor(np.zeros((2, 2)))))
    assert_close(out2, want[:, 0], rtol=1e-10, atol=1e-12)


def test_rnn_errors():
    m = nn.GRU(3, 4, num_layers=2)
    with pytest.raises(tj.ShapeError, match="input.size\\(-1\\) must be equal to input_size. "
                                            "Expected 3, got 2"):
        m(tj.ones(5, 2, 2))
    with pytest.raises(tj.ShapeError, match=r"expected h_0 of size \[2, 2, 4\], got \[1, 2, 4\]"):
        m(tj.ones(5, 2, 3), tj.zeros(1, 2, 4))
    with pytest.raises(tj.ShapeError, match="for batched 3-D input, hx should also be 3-D"):
        m(tj.ones(5, 2, 3), tj.zeros(2, 4))
    with pytest.raises(ValueError, match="Expected input to be 2D or 3D, got 4D"):
        m(tj.ones(1, 5, 2, 3))
    with pytest.raises(NotImplementedError, match="proj_size > 0"):
        nn.LSTM(3, 4, proj_size=2)
    with pytest.raises(ValueError, match="dropout should be a number in range"):
        nn.LSTM(3, 4, dropout=2.0)


def test_rnn_dropout_between_layers_only_in_training():
    with pytest.warns(UserWarning, match="non-zero dropout expects num_layers greater than 1"):
        nn.GRU(2, 3, dropout=0.5)
    m = nn.GRU(2, 3, num_layers=2, dropout=0.5)
    x = tj.tensor(data((4, 1, 2)))
    a, _ = m(x)
    b, _ = m(x)
    assert not np.allclose(_np(a), _np(b))
    m.eval()
    a, _ = m(x)
    b, _ = m(x)
    np.testing.assert_array_equal(_np(a), _np(b))


def test_cells_match_one_step_of_the_layers():
    lstm, cell = nn.LSTM(3, 2, dtype=tj.float64), nn.LSTMCell(3, 2, dtype=tj.float64)
    cell.load_state_dict({k.removesuffix("_l0"): v for k, v in lstm.state_dict().items()})
    x = tj.tensor(data((1, 4, 3), np.float64))
    out, (h, c) = lstm(x)
    h1, c1 = cell(x[0])
    assert_close(h1, _np(h[0]), rtol=1e-12, atol=1e-14)
    assert_close(c1, _np(c[0]), rtol=1e-12, atol=1e-14)
    gru, gcell = nn.GRU(3, 2, dtype=tj.float64), nn.GRUCell(3, 2, dtype=tj.float64)
    gcell.load_state_dict({k.removesuffix("_l0"): v for k, v in gru.state_dict().items()})
    out, h = gru(x)
    assert_close(gcell(x[0]), _np(h[0]), rtol=1e-12, atol=1e-14)
    assert gcell(x[0, 0]).shape == (2,)  # unbatched


# ============================================================================ losses


def test_losses():
    a, b = data((4, 3)), data((4, 3), seed=1)
    assert_close(nn.MSELoss()(tj.tensor(a), tj.tensor(b)), np.float32(((a - b) ** 2).mean()),
                 rtol=1e-6)
    assert_close(nn.MSELoss(reduction="sum")(tj.tensor(a), tj.tensor(b)),
                 np.float32(((a - b) ** 2).sum()), rtol=1e-6)
    assert nn.MSELoss(reduction="none")(tj.tensor(a), tj.tensor(b)).shape == (4, 3)
    logits = data((4, 3), np.float64)
    target = np.array([0, 2, 1, 2])
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    picked = -logp[np.arange(4), target]
    ce = nn.CrossEntropyLoss()(tj.tensor(logits), tj.tensor(target))
    assert_close(ce, picked.mean(), rtol=1e-12, atol=1e-14)
    w = np.array([1.0, 2.0, 0.5])
    ce_w = nn.CrossEntropyLoss(weight=tj.tensor(w), ignore_index=1)
    keep = target != 1
    want = (picked * w[target])[keep].sum() / w[target][keep].sum()
    assert_close(ce_w(tj.tensor(logits), tj.tensor(target)), want, rtol=1e-12, atol=1e-14)
    assert list(ce_w.state_dict()) == ["weight"]
    smooth = nn.CrossEntropyLoss(label_smoothing=0.2)(tj.tensor(logits), tj.tensor(target))
    assert_close(smooth, (0.8 * picked - 0.2 * logp.mean(1)).mean(), rtol=1e-12, atol=1e-14)
    nll = nn.NLLLoss(reduction="sum")(tj.tensor(logp), tj.tensor(target))
    assert_close(nll, picked.sum(), rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="reduction must be 'mean', 'sum' or 'none'"):
        nn.MSELoss(reduction="avg")


# ============================================================================ gradients


def _check_module(m, *inputs):
    """gradcheck of ``m`` with respect to its inputs and every parameter (float64)."""
    params = tuple(m.parameters())
    n = len(inputs)
    assert gradcheck(lambda *xs: m(*xs[:n]), inputs + params)


def test_gradcheck_linear():
    _check_module(nn.Linear(3, 2, dtype=tj.float64), tj.tensor(data((2, 3), np.float64),
                                                                requires_grad=True))


@pytest.mark.parametrize("kwargs", [dict(stride=2, padding=1, groups=2),
                                    dict(dilation=2, bias=False)])
def test_gradcheck_conv2d(kwargs):
    _check_module(nn.Conv2d(2, 2, 2, dtype=tj.float64, **kwargs),
                  tj.tensor(data((1, 2, 4, 4), np.float64), requires_grad=True))


def test_gradcheck_layer_norm():
    m = nn.LayerNorm(3, dtype=tj.float64)
    with tj.no_grad():
        m.weight.copy_(tj.tensor([0.5, -1.0, 2.0]))
    _check_module(m, tj.tensor(data((2, 3), np.float64), requires_grad=True))


@pytest.mark.parametrize("cls,shape", [(nn.BatchNorm1d, (4, 2)), (nn.BatchNorm2d, (2, 2, 2, 2))])
def test_gradcheck_batch_norm_training(cls, shape):
    m = cls(2, dtype=tj.float64)
    with tj.no_grad():
        m.weight.copy_(tj.tensor([1.5, -0.5]))
    _check_module(m, tj.tensor(data(shape, np.float64), requires_grad=True))
    m.eval()
    _check_module(m, tj.tensor(data(shape, np.float64), requires_grad=True))


def test_gradcheck_embedding():
    # (no padding_idx: its row is read but deliberately gets no gradient, as in torch)
    m = nn.Embedding(4, 2, dtype=tj.float64)
    idx = tj.tensor([[1, 0], [3, 1]])
    assert gradcheck(lambda w: m(idx), (m.weight,))


@pytest.mark.parametrize("cell", [nn.LSTMCell, nn.GRUCell])
def test_gradcheck_cells_two_steps(cell):
    m = cell(2, 2, dtype=tj.float64)
    x = tj.tensor(data((2, 1, 2), np.float64), requires_grad=True)
    h0 = tj.tensor(data((1, 2), np.float64, seed=1), requires_grad=True)

    def two_steps(x, h0, *params):
        if cell is nn.LSTMCell:
            state = (h0, h0 * 0.5)
            for t in range(2):
                state = m(x[t], state)
            return state
        h = h0
        for t in range(2):
            h = m(x[t], h)
        return h

    assert gradcheck(two_steps, (x, h0) + tuple(m.parameters()))


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU])
def test_gradcheck_rnn_layers(cls):
    m = cls(2, 2, num_layers=2, batch_first=True, dtype=tj.float64)
    x = tj.tensor(data((1, 2, 2), np.float64), requires_grad=True)
    params = tuple(m.parameters())
    assert gradcheck(lambda x, *ps: m(x)[0], (x,) + params)


# ============================================================================ tracing


def test_traced_batch_norm_step_writes_running_stats_back():
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    eager = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    eager.load_state_dict(model.state_dict())
    x = tj.tensor(data((4, 3)))
    traced = tj.trace(model, backend="interpret")
    for _ in range(2):
        got, want = traced(x), eager(x)
    assert_close(got, _np(want), rtol=1e-5, atol=1e-6)
    assert_close(model[1].running_mean, _np(eager[1].running_mean), rtol=1e-6, atol=1e-7)
    assert_close(model[1].running_var, _np(eager[1].running_var), rtol=1e-6, atol=1e-7)
    assert model[1].num_batches_tracked.item() == 2


@pytest.mark.parametrize("shape", [(4, 7), (2, 4, 7)])
def test_linear_weight_gradient_is_row_major(shape):
    """As torch's: ``(g.T @ x)``, so an optimizer or a DDP bucket reads it without a strided
    copy; eager and traced agree bit for bit."""
    lin = nn.Linear(7, 5)
    x = tj.randn(*shape)

    def grads(x):
        lin.zero_grad()
        (lin(x) ** 2).sum().backward()
        return lin.weight.grad

    eager = grads(x)
    assert eager.numpy().flags.c_contiguous
    traced = tj.trace(grads)
    traced(x)
    got = traced(x)
    np.testing.assert_array_equal(got.numpy(), eager.numpy())
    g = 2 * (x.numpy() @ lin.weight.detach().numpy().T + lin.bias.detach().numpy())
    want = g.reshape(-1, 5).T @ x.numpy().reshape(-1, 7)
    np.testing.assert_allclose(eager.numpy(), want, rtol=1e-5, atol=1e-5)
