"""Issue 15's layers and containers: ModuleDict, ParameterList, ParameterDict, Conv1d,
ConvTranspose2d, AdaptiveAvgPool2d, Upsample, GroupNorm, MultiheadAttention and the Transformer
encoder. Each against torch (float64, weights copied from torch): outputs and the gradients of
inputs and parameters; gradcheck on the new compositions; one traced check per layer."""

from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj
from tracejit.autograd import gradcheck

from ..conftest import data, leaf64

nn = tj.nn
F = tj.nn.functional


def _torch():
    return pytest.importorskip("torch")


def _np(t):
    return t.detach().numpy()


def _pair(make):
    torch = _torch()
    torch.manual_seed(0)
    mt = make(torch).double()
    mj = make(tj).double()
    assert list(mj.state_dict()) == list(mt.state_dict())
    mj.load_state_dict({k: _np(v).copy() for k, v in mt.state_dict().items()})
    return mj, mt


def _compare(mj, mt, arrays, call=lambda m, *xs: m(*xs), rtol=1e-9, atol=1e-11):
    torch = _torch()
    xj = [tj.tensor(a, requires_grad=a.dtype.kind == "f") for a in arrays]
    xt = [torch.tensor(a, requires_grad=a.dtype.kind == "f") for a in arrays]
    oj, ot = call(mj, *xj), call(mt, *xt)
    oj = oj[0] if isinstance(oj, tuple) else oj
    ot = ot[0] if isinstance(ot, tuple) else ot
    np.testing.assert_allclose(_np(oj), _np(ot), rtol=rtol, atol=atol)
    cot = data(tuple(ot.shape), np.float64, seed=5)
    (oj * tj.tensor(cot)).sum().backward()
    (ot * torch.tensor(cot)).sum().backward()
    for a, b in zip(xj, xt):
        if b.grad is not None:
            np.testing.assert_allclose(_np(a.grad), _np(b.grad), rtol=rtol, atol=atol)
    pt = dict(mt.named_parameters())
    for name, p in mj.named_parameters():
        np.testing.assert_allclose(_np(p.grad), _np(pt[name].grad), rtol=rtol, atol=atol,
                                   err_msg=name)


def _traced_matches(module, *xs):
    module.eval()
    want = module(*xs)
    got = tj.trace(module, backend="interpret")(*xs)
    want = want[0] if isinstance(want, tuple) else want
    got = got[0] if isinstance(got, tuple) else got
    np.testing.assert_allclose(_np(got), _np(want), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ containers

def test_module_dict():
    d = nn.ModuleDict({"enc": nn.Linear(2, 3)})
    d["dec"] = nn.Linear(3, 2)
    d.update([("act", nn.ReLU())])
    assert list(d.keys()) == ["enc", "dec", "act"] and len(d) == 3 and "dec" in d
    assert [n for n, _ in d.named_parameters()] == ["enc.weight", "enc.bias", "dec.weight",
                                                    "dec.bias"]
    assert isinstance(d.pop("act"), nn.ReLU) and list(d) == ["enc", "dec"]
    del d["dec"]
    assert list(d.state_dict()) == ["enc.weight", "enc.bias"]
    with pytest.raises(KeyError, match="shadow"):
        d["keys"] = nn.ReLU()
    with pytest.raises(KeyError):
        d["missing"]


def test_parameter_list_and_dict():
    pl = nn.ParameterList([tj.ones(2), nn.Parameter(tj.zeros(3))])
    pl.append(tj.zeros(1))
    assert len(pl) == 3 and all(isinstance(p, nn.Parameter) for p in pl)
    assert [n for n, _ in pl.named_parameters()] == ["0", "1", "2"]
    assert pl[-1].shape == (1,)
    pd = nn.ParameterDict({"scale": tj.ones(3)})
    pd["shift"] = tj.zeros(3)
    assert list(pd.keys()) == ["scale", "shift"] and isinstance(pd["shift"], nn.Parameter)
    assert [n for n, _ in pd.named_parameters()] == ["scale", "shift"]
    del pd["scale"]
    assert list(pd.state_dict()) == ["shift"]


def test_containers_state_dict_keys_as_torch():
    torch = _torch()

    def make(lib):
        m = lib.nn.Module()
        m.heads = lib.nn.ModuleDict({"a": lib.nn.Linear(2, 2), "b": lib.nn.Linear(2, 1)})
        m.ws = lib.nn.ParameterList([lib.nn.Parameter(lib.ones(2)), lib.nn.Parameter(
            lib.zeros(3))])
        m.pd = lib.nn.ParameterDict({"s": lib.nn.Parameter(lib.ones(1))})
        return m
    assert list(make(tj).state_dict()) == list(make(torch).state_dict())


def test_containers_optimize_and_trace():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.heads = nn.ModuleDict({"a": nn.Linear(3, 2)})
            self.scales = nn.ParameterList([tj.ones(2)])

        def forward(self, x):
            return self.heads["a"](x) * self.scales[0]

    m = M()
    x = tj.randn(4, 3)
    _traced_matches(m, x)
    opt = tj.optim.SGD(m.parameters(), lr=0.1)
    m(x).sum().backward()
    before = m.scales[0].detach().clone()
    opt.step()
    assert not np.allclose(_np(before), _np(m.scales[0]))


# ------------------------------------------------------------------ layers vs torch

CASES = {
    "conv1d": (lambda lib: lib.nn.Conv1d(4, 6, 3, stride=2, padding=1, dilation=1), (2, 4, 9)),
    "conv1d_groups_same": (lambda lib: lib.nn.Conv1d(4, 6, 3, padding="same", groups=2,
                                                     dilation=2), (2, 4, 9)),
    "conv_transpose2d": (lambda lib: lib.nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1,
                                                            output_padding=1), (2, 4, 5, 4)),
    "conv_transpose2d_groups": (lambda lib: lib.nn.ConvTranspose2d(4, 6, (2, 3), stride=(1, 2),
                                                                   groups=2, dilation=2),
                                (1, 4, 3, 5)),
    "adaptive_avg_pool": (lambda lib: lib.nn.AdaptiveAvgPool2d((3, 4)), (2, 3, 7, 9)),
    "adaptive_avg_pool_even": (lambda lib: lib.nn.AdaptiveAvgPool2d(2), (2, 3, 6, 4)),
    "adaptive_avg_pool_global": (lambda lib: lib.nn.AdaptiveAvgPool2d((1, None)), (2, 3, 5, 4)),
    "upsample_nearest": (lambda lib: lib.nn.Upsample(scale_factor=2), (2, 3, 4, 5)),
    "upsample_nearest_size": (lambda lib: lib.nn.Upsample(size=(7, 3)), (1, 2, 4, 5)),
    "upsample_bilinear": (lambda lib: lib.nn.Upsample(scale_factor=1.7, mode="bilinear"),
                          (2, 3, 4, 5)),
    "upsample_bilinear_ac": (lambda lib: lib.nn.Upsample(size=(6, 9), mode="bilinear",
                                                         align_corners=True), (1, 2, 4, 5)),
    "upsample_linear": (lambda lib: lib.nn.Upsample(size=11, mode="linear"), (2, 3, 4)),
    "group_norm": (lambda lib: lib.nn.GroupNorm(2, 6), (3, 6, 4, 2)),
    "group_norm_3d": (lambda lib: lib.nn.GroupNorm(3, 3, affine=False), (2, 3, 5)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_layer_matches_torch(name):
    make, shape = CASES[name]
    mj, mt = _pair(make)
    _compare(mj, mt, [data(shape, np.float64, seed=1)])


@pytest.mark.parametrize("name", list(CASES))
def test_layer_traced(name):
    make, shape = CASES[name]
    _traced_matches(make(tj), tj.tensor(data(shape, np.float32, seed=2)))


def test_conv_transpose2d_output_size():
    torch = _torch()
    mj, mt = _pair(lambda lib: lib.nn.ConvTranspose2d(2, 2, 3, stride=2))
    x = data((1, 2, 4, 4), np.float64)
    out_j = mj(tj.tensor(x), output_size=(10, 10))
    out_t = mt(torch.tensor(x), output_size=(10, 10))
    np.testing.assert_allclose(_np(out_j), _np(out_t), rtol=1e-10)


def test_conv_transpose_is_conv_adjoint():
    # <conv2d(x, w), y> == <x, conv_transpose2d(y, w)>
    x, w = tj.randn(1, 3, 6, 6, dtype=tj.float64), tj.randn(4, 3, 3, 3, dtype=tj.float64)
    y = tj.randn(1, 4, 2, 2, dtype=tj.float64)
    lhs = (F.conv2d(x, w, stride=2) * y).sum().item()
    rhs = (x * F.conv_transpose2d(y, w, stride=2, output_padding=1)).sum().item()
    assert abs(lhs - rhs) < 1e-9


@pytest.mark.parametrize("fn", [
    lambda x: F.conv_transpose2d(x, tj.tensor(data((2, 3, 2, 2), np.float64)), stride=2),
    lambda x: F.adaptive_avg_pool2d(x, (2, 3)),
    lambda x: F.interpolate(x, scale_factor=1.5, mode="bilinear"),
    lambda x: F.interpolate(x, size=(5, 2), mode="nearest"),
    lambda x: F.group_norm(x, 1),
], ids=["conv_transpose2d", "adaptive_avg_pool2d", "bilinear", "nearest", "group_norm"])
def test_gradcheck(fn):
    assert gradcheck(fn, (leaf64((1, 2, 3, 4)),))


def test_layer_errors():
    with pytest.raises(NotImplementedError, match="bicubic"):
        F.interpolate(tj.ones(1, 1, 2, 2), scale_factor=2, mode="bicubic")
    with pytest.raises(ValueError, match="only one of size or scale_factor"):
        F.interpolate(tj.ones(1, 1, 2, 2))
    with pytest.raises(tj.ShapeError, match="4 channels"):
        F.conv_transpose2d(tj.ones(1, 3, 2, 2), tj.ones(4, 1, 2, 2))
    with pytest.raises(ValueError, match="divisible"):
        nn.GroupNorm(4, 6)


# ------------------------------------------------------------------ attention and transformer

def _seq(shape, seed=3):
    return data(shape, np.float64, seed=seed)


@pytest.mark.parametrize("batch_first", [False, True])
def test_multihead_attention(batch_first):
    torch = _torch()
    mj, mt = _pair(lambda lib: lib.nn.MultiheadAttention(8, 2, batch_first=batch_first))
    q, k = _seq((5, 3, 8)), _seq((4, 3, 8), seed=4)
    if batch_first:
        q, k = q.transpose(1, 0, 2).copy(), k.transpose(1, 0, 2).copy()
    _compare(mj, mt, [q, k, k.copy()])
    # the averaged and per-head weights
    for avg in (True, False):
        wj = mj(tj.tensor(q), tj.tensor(k), tj.tensor(k), average_attn_weights=avg)[1]
        wt = mt(torch.tensor(q), torch.tensor(k), torch.tensor(k), average_attn_weights=avg)[1]
        np.testing.assert_allclose(_np(wj), _np(wt), rtol=1e-9, atol=1e-12)


def test_multihead_attention_masks_and_kdim():
    torch = _torch()
    mj, mt = _pair(lambda lib: lib.nn.MultiheadAttention(6, 3, kdim=4, vdim=5))
    q, k, v = _seq((3, 2, 6)), _seq((4, 2, 4), seed=5), _seq((4, 2, 5), seed=6)
    attn = np.triu(np.ones((3, 4), bool), 1)
    kpm = np.zeros((2, 4), bool)
    kpm[1, 3] = True

    def call(m, q, k, v):
        lib = torch if isinstance(m, torch.nn.Module) else tj
        return m(q, k, v, attn_mask=lib.tensor(attn), key_padding_mask=lib.tensor(kpm))
    _compare(mj, mt, [q, k, v], call=call)
    float_mask = _seq((6, 3, 4), seed=7)

    def call3(m, q, k, v):
        lib = torch if isinstance(m, torch.nn.Module) else tj
        return m(q, k, v, attn_mask=lib.tensor(float_mask))
    _compare(mj, mt, [q, k, v], call=call3)


def test_multihead_attention_unbatched_and_traced():
    torch = _torch()
    mj, mt = _pair(lambda lib: lib.nn.MultiheadAttention(4, 2))
    q = _seq((3, 4))
    _compare(mj, mt, [q, q.copy(), q.copy()])
    x = tj.tensor(_seq((3, 2, 4)).astype(np.float32))
    m = nn.MultiheadAttention(4, 2)
    _traced_matches(m, x, x, x)
    with pytest.raises(NotImplementedError, match="add_bias_kv"):
        nn.MultiheadAttention(4, 2, add_bias_kv=True)
    assert torch is not None


def test_sdpa_matches_torch():
    torch = _torch()
    q, k, v = _seq((2, 3, 5, 4)), _seq((2, 3, 6, 4), seed=8), _seq((2, 3, 6, 4), seed=9)
    mask = np.random.default_rng(0).random((5, 6)) > 0.3
    mask[:, 0] = True
    for kw in ({}, {"is_causal": True}, {"attn_mask": mask}):
        kj = {k_: (tj.tensor(v_) if k_ == "attn_mask" else v_) for k_, v_ in kw.items()}
        kt = {k_: (torch.tensor(v_) if k_ == "attn_mask" else v_) for k_, v_ in kw.items()}
        got = F.scaled_dot_product_attention(tj.tensor(q), tj.tensor(k), tj.tensor(v), **kj)
        want = torch.nn.functional.scaled_dot_product_attention(
            torch.tensor(q), torch.tensor(k), torch.tensor(v), **kt)
        np.testing.assert_allclose(_np(got), _np(want), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("norm_first,activation", [(False, "relu"), (True, "gelu")])
def test_transformer_encoder(norm_first, activation):
    torch = _torch()

    def make(lib):
        layer = lib.nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0,
                                               activation=activation, norm_first=norm_first,
                                               batch_first=True)
        return lib.nn.TransformerEncoder(layer, 2, norm=lib.nn.LayerNorm(8),
                                         enable_nested_tensor=False)
    mj, mt = _pair(make)
    x = _seq((3, 5, 8))
    mask = np.triu(np.full((5, 5), -np.inf), 1)

    def call(m, x):
        lib = torch if isinstance(m, torch.nn.Module) else tj
        return m(x, mask=lib.tensor(mask))
    _compare(mj, mt, [x], call=call)


def test_transformer_encoder_layer_traced_and_dropout_train():
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16)
    x = tj.randn(5, 3, 8)
    layer.train()
    a, b = layer(x), layer(x)
    assert not np.allclose(_np(a), _np(b))  # dropout in training
    _traced_matches(layer, x)


def test_gradcheck_attention():
    w = leaf64((12, 4), seed=1)
    wo = leaf64((4, 4), seed=2)

    def f(x, w, wo):
        return F.multi_head_attention_forward(x, x, x, 2, w, None, wo, None)[0]
    assert gradcheck(f, (leaf64((3, 2, 4), low=-1, high=1), w, wo))


def test_compiled_model_of_new_layers():
    """The new layers through the numba backend, forward and the compiled backward."""
    model = nn.Sequential(nn.Conv1d(2, 4, 3, padding=1), nn.GroupNorm(2, 4),
                          nn.Upsample(scale_factor=2, mode="linear"))
    x = tj.randn(2, 2, 6)
    want = model(x)
    step = tj.trace(lambda x: model(x).square().sum())
    loss = step(x)
    np.testing.assert_allclose(loss.item(), want.square().sum().item(), rtol=1e-4)
    np.testing.assert_allclose(_np(step(x * 2)), _np(model(x * 2).square().sum()), rtol=1e-4)


@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer_decoder(norm_first):
    torch = _torch()

    def make(lib):
        layer = lib.nn.TransformerDecoderLayer(8, 2, dim_feedforward=16, dropout=0.0,
                                               norm_first=norm_first)
        return lib.nn.TransformerDecoder(layer, 2, norm=lib.nn.LayerNorm(8))
    mj, mt = _pair(make)
    tgt, mem = _seq((4, 3, 8)), _seq((5, 3, 8), seed=11)
    causal = np.triu(np.full((4, 4), -np.inf), 1)
    kpm = np.zeros((3, 5), bool)
    kpm[0, 4] = True

    def call(m, tgt, mem):
        lib = torch if isinstance(m, torch.nn.Module) else tj
        return m(tgt, mem, tgt_mask=lib.tensor(causal), memory_key_padding_mask=lib.tensor(kpm))
    _compare(mj, mt, [tgt, mem], call=call)


def test_full_transformer():
    torch = _torch()

    def make(lib):
        return lib.nn.Transformer(d_model=8, nhead=2, num_encoder_layers=1,
                                  num_decoder_layers=2, dim_feedforward=12, dropout=0.0,
                                  batch_first=True)
    mj, mt = _pair(make)
    src, tgt = _seq((2, 5, 8)), _seq((2, 3, 8), seed=12)
    mask = nn.Transformer.generate_square_subsequent_mask(3)
    np.testing.assert_array_equal(_np(mask), torch.nn.Transformer.generate_square_subsequent_mask(
        3, dtype=torch.float32).numpy())

    def call(m, src, tgt):
        lib = torch if isinstance(m, torch.nn.Module) else tj
        return m(src, tgt, tgt_mask=lib.tensor(_np(mask)).double())
    _compare(mj, mt, [src, tgt], call=call)
    # torch's initialisation: every matrix Xavier-uniform
    w = nn.Transformer(8, 2, 1, 1, 12).decoder.layers[0].linear1.weight
    bound = np.sqrt(6 / (8 + 12))
    assert np.abs(_np(w)).max() <= bound


def test_decoder_layer_traced():
    layer = nn.TransformerDecoderLayer(8, 2, dim_feedforward=16)
    _traced_matches(layer, tj.randn(4, 2, 8), tj.randn(5, 2, 8))
