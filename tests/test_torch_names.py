"""The torch-name table: a torch name tracejit lacks raises an AttributeError that says so and
names the alternative; exact synonyms resolve; typos get close matches; nothing is bare."""

from __future__ import annotations

import importlib

import pytest

import tracejit as tj
from tracejit import _torch_names as names

MODULES = sorted(set(names.ADVICE) | set(names.ALIASES) | set(names.PATTERNS))


@pytest.mark.parametrize("module", MODULES)
def test_every_table_module_has_the_hook(module):
    mod = importlib.import_module(module)
    assert mod.__getattr__ is names._INSTALLED[module]


@pytest.mark.parametrize("module", sorted(names.ALIASES))
def test_aliases_resolve(module):
    mod = importlib.import_module(module)
    for name, target in names.ALIASES[module].items():
        assert getattr(mod, name) is names._resolve(target), name


def test_alias_values():
    a, b = tj.tensor([1.0, 2.0]), tj.tensor([3.0, 0.5])
    assert tj.concat([a, b]).tolist() == [1.0, 2.0, 3.0, 0.5]
    assert tj.multiply(a, b).tolist() == [3.0, 1.0]
    assert tj.greater(a, b).tolist() == [False, True]
    from tracejit import concatenate  # from-imports go through the hook too
    assert concatenate is tj.cat


@pytest.mark.parametrize("module", sorted(names.ADVICE))
def test_advice_entries_name_the_alternative(module):
    mod = importlib.import_module(module)
    for name, text in names.ADVICE[module].items():
        if name in vars(mod) or names._submodule(module, name) is not None:
            continue  # tracejit gained it since (another branch): nothing to say
        with pytest.raises(AttributeError) as info:
            getattr(mod, name)
        msg = str(info.value)
        torch_module = module.replace("tracejit", "torch", 1)
        assert f"({torch_module}.{name})" in msg and text in msg, msg
        assert not hasattr(mod, name)


@pytest.mark.parametrize("expr, expect", [
    ("tj.nn.LazyLinear", "lazy modules are not supported"),
    ("tj.nn.Conv3d", "3-d"),
    ("tj.nn.ReflectionPad2d", "zero/constant padding"),
    ("tj.nn.TripletMarginWithDistanceLoss", "losses are MSELoss"),
    ("tj.nn.functional.conv3d", "3-d"),
    ("tj.conv2d", "tracejit.nn.functional.conv2d"),
    ("tj.kron", "compose it from existing Tensor ops"),
    ("tj.nn.init.xavier_uniform", "nn.init.xavier_uniform_"),
    ("tj.nn.functional.relu_", "x.relu_()"),
    ("tj.cuda.mem_get_info", "is_available"),
])
def test_rules(expr, expect):
    with pytest.raises(AttributeError, match="has no") as info:
        eval(expr)
    assert expect in str(info.value)


def test_unknown_names_are_not_bare():
    with pytest.raises(AttributeError, match="not a torch name tracejit knows of") as info:
        tj.nn.Conv2D  # noqa: B018
    assert "did you mean 'Conv2d'" in str(info.value)
    with pytest.raises(AttributeError, match="not a torch name"):
        tj.optim.Adamm  # noqa: B018
    with pytest.raises(AttributeError):
        tj.__wrapped__  # noqa: B018 - dunders stay plain (copy, pickle, inspect probe them)
    import tracejit.utils.data  # noqa: F401 - submodule imports still work
    from tracejit.nn import transformer  # noqa: F401


def test_a_subpackage_not_imported_yet_is_imported_not_advised(monkeypatch):
    import sys
    monkeypatch.delitem(sys.modules, "tracejit.utils.data", raising=False)
    monkeypatch.delattr(tj.utils, "data", raising=False)
    assert tj.utils.data.DataLoader is not None  # found, imported, returned


def test_every_common_torch_name_is_known():
    """With torch installed: the public names of the mirrored torch modules that tutorials use
    either exist in tracejit or get an answer from the table."""
    torch = pytest.importorskip("torch")
    common = {
        "torch": ["einsum", "save", "inference_mode", "float16", "bfloat16", "complex64",
                  "set_num_threads", "allclose", "sort", "topk", "unique", "nonzero", "linalg",
                  "fft", "distributions", "autocast", "amp", "conv2d", "sinh_", "kron"],
        "torch.nn": ["Conv3d", "LazyLinear", "ELU", "PReLU", "Transformer",
                     "TransformerDecoderLayer", "Dropout2d", "DataParallel", "InstanceNorm2d"],
        "torch.nn.functional": ["elu", "normalize", "cosine_similarity", "batch_norm",
                                "grid_sample", "gumbel_softmax", "pixel_shuffle"],
        "torch.optim": ["NAdam", "RAdam", "Adadelta", "Adamax", "SparseAdam"],
        "torch.optim.lr_scheduler": ["CyclicLR", "LRScheduler"],
        "torch.jit": ["script", "freeze", "ScriptModule"],
        "torch.cuda": ["amp", "manual_seed", "Stream", "memory_allocated"],
        "torch.nn.utils": ["rnn", "weight_norm", "clip_grad_norm"],
    }
    for torch_module, wanted in common.items():
        tmod = importlib.import_module(torch_module)
        jmod = importlib.import_module(torch_module.replace("torch", "tracejit", 1))
        for name in wanted:
            assert hasattr(tmod, name), (torch_module, name)  # the table follows torch
            try:
                getattr(jmod, name)
            except AttributeError as e:
                assert "not a torch name" not in str(e), (torch_module, name)
    assert torch is not None


def test_tensor_attributes():
    t = tj.ones(2, 3)
    assert t.nelement() == 6 and t.swapaxes(0, 1).shape == (3, 2)
    with pytest.raises(AttributeError, match=r"has no half \(torch.Tensor.half\): no float16"):
        t.half()
    with pytest.raises(AttributeError, match="did you mean 'size'"):
        t.sizes  # noqa: B018
    with pytest.raises(AttributeError, match="this tensor is on the CPU"):
        t.__cuda_array_interface__  # noqa: B018 - a property's own error is kept
    assert not hasattr(t, "storage") and not hasattr(t, "_nothing")
    for name in names.TENSOR_ADVICE:
        if hasattr(type(t), name):
            continue
        with pytest.raises(AttributeError, match=rf"\(torch.Tensor.{name}\)"):
            getattr(t, name)
    for name, target in names.TENSOR_ALIASES.items():
        assert getattr(t, name).__name__ == getattr(t, target).__name__
