"""torch names tracejit does not have, and what to use instead.

Every public tracejit module that mirrors a torch one (``tracejit``, ``tracejit.nn``,
``tracejit.nn.functional``, ``tracejit.optim``...) gets a module ``__getattr__`` from
``install``: a torch name that tracejit lacks raises an ``AttributeError`` saying so and naming
the alternative, never a bare "module has no attribute". A few exact synonyms (``torch.concat``
is ``cat``) are returned instead.

>>> tracejit.einsum                                                     # doctest: +SKIP
AttributeError: tracejit has no einsum (torch.einsum): ...

The lookup order: ALIASES, then ADVICE, then rules that look at what exists now (a torch
function that tracejit has in ``nn.functional`` or as a Tensor method), then PATTERNS, then the
list of torch functions with a generic answer; anything else is named as unknown to torch too,
with close matches. Entries for names tracejit gains later are simply never reached.
"""

from __future__ import annotations

import difflib
import importlib
import re

GUIDE = 'docs/guide.md, "Coming from PyTorch"'

# exact synonyms: torch name -> tracejit attribute (a dotted path from the package)
ALIASES: dict[str, dict[str, str]] = {
    "tracejit": {
        "concat": "cat", "concatenate": "cat", "absolute": "abs", "multiply": "mul",
        "subtract": "sub", "divide": "div", "true_divide": "div", "negative": "neg",
        "greater": "gt", "greater_equal": "ge", "less": "lt", "less_equal": "le",
        "not_equal": "ne", "clamp_min": "Tensor.clamp_min", "clamp_max": "Tensor.clamp_max",
    },
    "tracejit.nn.utils": {"clip_grad_norm": "nn.utils.clip_grad_norm_"},
}

_DTYPES = ("float32, float64, int32, int64 and bool; compute in float32 (or float64) and "
           "convert at the edges with numpy")
_OP = ("not in tracejit yet; compose it from existing Tensor ops (they trace and "
       "differentiate), or compute it eagerly with numpy on t.numpy()")
_ONE_DEVICE = "tracejit runs on the CPU and one CUDA device (tracejit.cuda)"
_TENSOR_TYPES = ("tracejit has no typed tensor classes; use tracejit.tensor(data, "
                 "dtype=tracejit.float32) and isinstance(t, tracejit.Tensor)")

ADVICE: dict[str, dict[str, str]] = {
    "tracejit": {
        "dtype": "dtypes are numpy dtypes: tracejit.float32 is numpy.dtype('float32')",
        "bfloat16": f"no such dtype; the dtypes are {_DTYPES}",
        "float16": f"no such dtype; the dtypes are {_DTYPES}",
        "half": f"no such dtype; the dtypes are {_DTYPES}",
        "complex64": f"no complex dtypes; the dtypes are {_DTYPES}",
        "complex128": f"no complex dtypes; the dtypes are {_DTYPES}",
        "complex32": f"no complex dtypes; the dtypes are {_DTYPES}",
        "cfloat": f"no complex dtypes; the dtypes are {_DTYPES}",
        "cdouble": f"no complex dtypes; the dtypes are {_DTYPES}",
        "chalf": f"no complex dtypes; the dtypes are {_DTYPES}",
        "complex": f"no complex dtypes; the dtypes are {_DTYPES}",
        "short": f"no int16 dtype; the dtypes are {_DTYPES}",
        "uint8": f"no uint8 dtype; the dtypes are {_DTYPES}",
        "int8": f"no int8 dtype; the dtypes are {_DTYPES}",
        "int16": f"no int16 dtype; the dtypes are {_DTYPES}",
        "FloatTensor": _TENSOR_TYPES,
        "DoubleTensor": _TENSOR_TYPES,
        "LongTensor": _TENSOR_TYPES,
        "IntTensor": _TENSOR_TYPES,
        "BoolTensor": _TENSOR_TYPES,
        "ByteTensor": _TENSOR_TYPES,
        "HalfTensor": _TENSOR_TYPES,
        "Size": "shapes are plain tuples: t.shape == (2, 3)",
        "set_num_threads": "set NUMBA_NUM_THREADS before import, or call "
                           "numba.set_num_threads(n)",
        "get_num_threads": "use numba.get_num_threads()",
        "set_num_interop_threads": "tracejit has no inter-op pool; see numba.set_num_threads",
        "get_num_interop_threads": "tracejit has no inter-op pool; see numba.get_num_threads",
        "use_deterministic_algorithms": "not needed: tracejit's CPU kernels are deterministic "
                                        "for a given thread count",
        "are_deterministic_algorithms_enabled": "tracejit's CPU kernels are deterministic for "
                                                "a given thread count",
        "set_default_device": "not supported; pass device= to factories or call .cuda()",
        "get_default_device": "the default device is always tracejit.device('cpu')",
        "set_default_tensor_type": "use tracejit.set_default_dtype(tracejit.float64)",
        "set_printoptions": "not supported; tensors print like torch's defaults (use "
                            "numpy.set_printoptions on t.numpy() for more)",
        "inference_mode": "use tracejit.no_grad() (there is no separate inference mode)",
        "is_inference_mode_enabled": "use not tracejit.is_grad_enabled()",
        "channels_last": "memory formats are not supported; tensors are C-contiguous (NCHW)",
        "channels_last_3d": "memory formats are not supported; tensors are C-contiguous",
        "contiguous_format": "memory formats are not supported; tensors are C-contiguous",
        "preserve_format": "memory formats are not supported; tensors are C-contiguous",
        "legacy_contiguous_format": "memory formats are not supported",
        "set_float32_matmul_precision": "not needed: float32 matmuls run in float32 (BLAS)",
        "get_float32_matmul_precision": "float32 matmuls run in float32 ('highest')",
        "finfo": "use numpy.finfo(tracejit.float32)",
        "iinfo": "use numpy.iinfo(tracejit.int64)",
        "asarray": "use tracejit.as_tensor(data)",
        "scalar_tensor": "use tracejit.tensor(value)",
        "to_dlpack": "tracejit tensors implement __dlpack__: pass the tensor itself",
        "frombuffer": "use tracejit.from_numpy(numpy.frombuffer(buf, dtype))",
        "bernoulli": "use (tracejit.rand_like(p) < p).float()",
        "multinomial": "not supported; draw with numpy (rng.choice) and pass the indices in",
        "normal": "use tracejit.randn(*shape) * std + mean",
        "poisson": "not supported; draw with numpy.random.Generator.poisson",
        "randint_like": "use tracejit.randint(low, high, t.shape)",
        "is_floating_point": "use t.is_floating_point()",
        "is_complex": "tracejit has no complex dtypes: always False",
        "set_deterministic_debug_mode": "not needed: CPU kernels are deterministic",
        "get_deterministic_debug_mode": "not needed: CPU kernels are deterministic",
        "fft": "not supported; use numpy.fft on t.numpy() eagerly",
        "special": "not supported; tracejit has erf, sigmoid, log1p, expm1 ... as Tensor "
                   "methods",
        "sparse": "sparse tensors are not supported; use dense tensors",
        "distributions": "not supported; draw with tracejit.rand/randn and write the log-prob "
                         "with Tensor ops",
        "func": "use tracejit.grad / tracejit.value_and_grad; for vmap, add a leading batch dim",
        "vmap": "not supported; add a leading batch dim (ops broadcast)",
        "amp": "mixed precision is not supported; train in float32",
        "autocast": "mixed precision is not supported; train in float32",
        "backends": "tracejit has no backend flags; tracejit.trace(fn, backend='cpu' | "
                    "'interpret')",
        "hub": "tracejit downloads nothing; load weights with model.load_state_dict(...)",
        "profiler": "use TRACEJIT_DEBUG=graph,passes,src and fn.cache_info(); see "
                    "docs/tracing.md",
        "testing": "use numpy.testing.assert_allclose(a.numpy(), b.numpy())",
        "quantization": "quantization is not supported",
        "ao": "quantization and pruning are not supported",
        "mps": f"not supported; {_ONE_DEVICE}",
        "xpu": f"not supported; {_ONE_DEVICE}",
        "fx": "tracejit's graphs are its own IR: fn.graph(*args) prints one",
        "compiler": "use tracejit.compile / tracejit.trace",
        "multiprocessing": "use Python's multiprocessing; tracejit.utils.data.DataLoader("
                           "num_workers=n) runs worker processes",
        "storage": "tensors are numpy arrays underneath: t.numpy()",
        "masked": "masked tensors are not supported; use where / masked_fill",
        "nested": "nested tensors are not supported; pad to a common length",
    },
    "tracejit.nn": {
        "DataParallel": "not supported; tracejit runs a model on one device",
        "SyncBatchNorm": "not supported; use BatchNorm2d (one device)",
        "ELU": "not in tracejit yet; in forward, where(x > 0, x, alpha * x.expm1())",
        "SELU": "not in tracejit yet; in forward, 1.0507 * where(x > 0, x, 1.6733 * x.expm1())",
        "CELU": "not in tracejit yet; in forward, where(x > 0, x, alpha * (x / alpha).expm1())",
        "PReLU": "not in tracejit yet; a Module with a Parameter a and where(x > 0, x, a * x)",
        "ReLU6": "not in tracejit yet; use x.clamp(0, 6)",
        "Hardtanh": "not in tracejit yet; use x.clamp(min_val, max_val)",
        "Softplus": "use tracejit.nn.functional.softplus(x, beta, threshold) in forward",
        "Mish": "not in tracejit yet; in forward, x * F.softplus(x).tanh()",
        "Hardswish": "not in tracejit yet; in forward, x * (x + 3).clamp(0, 6) / 6",
        "Hardsigmoid": "not in tracejit yet; in forward, (x + 3).clamp(0, 6) / 6",
        "LogSigmoid": "not in tracejit yet; in forward, -F.softplus(-x)",
        "Softsign": "not in tracejit yet; in forward, x / (1 + x.abs())",
        "Softmin": "not in tracejit yet; in forward, (-x).softmax(dim)",
        "GLU": "not in tracejit yet; a, b = x.chunk(2, dim); a * b.sigmoid()",
        "Threshold": "not in tracejit yet; where(x > threshold, x, value)",
        "Dropout1d": "not in tracejit yet; multiply by a (N, C, 1) mask of "
                     "(tracejit.rand(n, c, 1) >= p) / (1 - p)",
        "Dropout2d": "not in tracejit yet; multiply by a (N, C, 1, 1) mask of "
                     "(tracejit.rand(n, c, 1, 1) >= p) / (1 - p)",
        "Unfold": "use tracejit.nn.functional.unfold in forward",
        "Fold": "use tracejit.nn.functional.fold in forward",
        "Unflatten": "use x.unflatten(dim, sizes) in forward",
        "ZeroPad2d": "use tracejit.nn.functional.pad(x, (left, right, top, bottom))",
        "ConstantPad2d": "use tracejit.nn.functional.pad(x, pad, value=v)",
        "ConstantPad1d": "use tracejit.nn.functional.pad(x, pad, value=v)",
        "ZeroPad1d": "use tracejit.nn.functional.pad(x, (left, right))",
        "MaxPool1d": "not in tracejit yet; use MaxPool2d on x.unsqueeze(2) with kernel (1, k)",
        "AvgPool1d": "not in tracejit yet; use AvgPool2d on x.unsqueeze(2) with kernel (1, k)",
        "AdaptiveAvgPool1d": "use AdaptiveAvgPool2d((1, n)) on x.unsqueeze(2), then squeeze(2)",
        "AdaptiveMaxPool2d": "not in tracejit yet; for a divisible size use MaxPool2d(kernel = "
                             "in // out)",
        "ConvTranspose1d": "use ConvTranspose2d on x.unsqueeze(2) with kernel (1, k)",
        "InstanceNorm1d": "use GroupNorm(num_channels, num_channels) (instance norm with an "
                          "affine per channel)",
        "InstanceNorm2d": "use GroupNorm(num_channels, num_channels) (instance norm with an "
                          "affine per channel)",
        "RMSNorm": "not in tracejit yet; x * (x.square().mean(-1, keepdim=True) + eps).rsqrt() "
                   "* weight",
        "UpsamplingNearest2d": "use Upsample(scale_factor=..., mode='nearest')",
        "UpsamplingBilinear2d": "use Upsample(scale_factor=..., mode='bilinear', "
                                "align_corners=True)",
        "PixelShuffle": "not in tracejit yet; reshape (N, C*r*r, H, W) -> (N, C, r, r, H, W), "
                        "permute(0, 1, 4, 2, 5, 3) and reshape to (N, C, H*r, W*r)",
        "Bilinear": "not in tracejit yet; ((x1 @ W) * x2).sum(-1) per output, W a Parameter",
        "CosineSimilarity": "not in tracejit yet; (a * b).sum(dim) / (a.norm(dim=dim) * "
                            "b.norm(dim=dim)).clamp(min=eps)",
        "PairwiseDistance": "not in tracejit yet; (a - b + eps).norm(dim=-1)",
        "EmbeddingBag": "not in tracejit yet; Embedding then .mean(1) / .sum(1) over the bag",
        "CTCLoss": "not supported",
        "PoissonNLLLoss": "not in tracejit yet; input.exp() - target * input (log_input=True)",
        "GaussianNLLLoss": "not in tracejit yet; 0.5 * (var.log() + (input - target) ** 2 / "
                           "var)",
        "MarginRankingLoss": "not in tracejit yet; (-y * (x1 - x2) + margin).clamp(min=0)",
        "TripletMarginLoss": "not in tracejit yet; (d(a, p) - d(a, n) + margin).clamp(min=0)",
        "CosineEmbeddingLoss": "not in tracejit yet; compose it from the cosine similarity",
        "HingeEmbeddingLoss": "not in tracejit yet; where(y == 1, x, (margin - x).clamp(min=0))",
        "SoftMarginLoss": "not in tracejit yet; F.softplus(-y * x)",
        "MultiLabelSoftMarginLoss": "use BCEWithLogitsLoss on the multi-hot target",
        "NLLLoss2d": "use NLLLoss, which takes (N, C, H, W) input",
        "Buffer": "use self.register_buffer(name, tensor)",
        "Container": "use Sequential, ModuleList or ModuleDict",
        "RNNCellBase": "use RNNCell, LSTMCell or GRUCell",
    },
    "tracejit.nn.functional": {
        "batch_norm": "use a BatchNorm1d/2d module, or (x - mean) * (var + eps).rsqrt() * "
                      "weight + bias",
        "instance_norm": "use F.group_norm(x, num_channels)",
        "normalize": "not in tracejit yet; x / x.norm(dim=dim, keepdim=True).clamp(min=eps)",
        "cosine_similarity": "not in tracejit yet; (a * b).sum(dim) / (a.norm(dim=dim) * "
                             "b.norm(dim=dim)).clamp(min=eps)",
        "elu": "not in tracejit yet; where(x > 0, x, alpha * x.expm1())",
        "selu": "not in tracejit yet; 1.0507 * where(x > 0, x, 1.6733 * x.expm1())",
        "relu6": "not in tracejit yet; x.clamp(0, 6)",
        "hardtanh": "not in tracejit yet; x.clamp(min_val, max_val)",
        "mish": "not in tracejit yet; x * F.softplus(x).tanh()",
        "logsigmoid": "not in tracejit yet; -F.softplus(-x)",
        "softmin": "not in tracejit yet; (-x).softmax(dim)",
        "glu": "not in tracejit yet; a, b = x.chunk(2, dim); a * b.sigmoid()",
        "max_pool1d": "use F.max_pool2d on x.unsqueeze(2) with kernel (1, k)",
        "avg_pool1d": "use F.avg_pool2d on x.unsqueeze(2) with kernel (1, k)",
        "adaptive_avg_pool1d": "use F.adaptive_avg_pool2d(x.unsqueeze(2), (1, n)).squeeze(2)",
        "conv_transpose1d": "use F.conv_transpose2d on x.unsqueeze(2) with weight.unsqueeze(2)",
        "upsample_nearest": "use F.interpolate(x, size, scale_factor, mode='nearest')",
        "upsample_bilinear": "use F.interpolate(x, size, scale_factor, mode='bilinear', "
                             "align_corners=True)",
        "grid_sample": "not supported",
        "affine_grid": "not supported",
        "pixel_shuffle": "not in tracejit yet; reshape, permute(0, 1, 4, 2, 5, 3), reshape",
        "gumbel_softmax": "not in tracejit yet; ((logits - (-tracejit.rand_like(logits).log())"
                          ".log()) / tau).softmax(-1)",
        "ctc_loss": "not supported",
        "rms_norm": "not in tracejit yet; x * (x.square().mean(-1, keepdim=True) + eps).rsqrt()",
    },
    "tracejit.nn.init": {
        "trunc_normal_": "not in tracejit yet; init.normal_ then clamp_ (under no_grad), or "
                         "redraw the outliers",
        "orthogonal_": "not in tracejit yet; eagerly, q, _ = numpy.linalg.qr(...) and copy_",
        "eye_": "use w.copy_(tracejit.eye(*w.shape)) under tracejit.no_grad()",
        "dirac_": "not supported",
        "sparse_": "not supported",
    },
    "tracejit.nn.utils": {
        "rnn": "packed sequences are not supported; pad the batch and mask (or pass lengths "
               "and pick the last valid step with gather)",
        "weight_norm": "not supported; write w = g * v / v.norm(dim=1, keepdim=True) in forward",
        "spectral_norm": "not supported",
        "parametrize": "not supported; compute the weight from parameters in forward",
        "parametrizations": "not supported; compute the weight from parameters in forward",
        "prune": "pruning is not supported; multiply weights by a mask buffer",
        "stateless": "not supported; load the weights with load_state_dict",
        "fuse_conv_bn_eval": "not supported; the traced graph fuses elementwise work itself",
    },
    "tracejit.optim": {
        "Adadelta": "not in tracejit yet; use Adam, AdamW, RMSprop or Adagrad",
        "Adamax": "not in tracejit yet; use Adam or AdamW",
        "NAdam": "not in tracejit yet; use Adam or AdamW",
        "RAdam": "not in tracejit yet; use Adam or AdamW (with a LinearLR warm-up)",
        "ASGD": "not in tracejit yet; use SGD",
        "Rprop": "not in tracejit yet; use RMSprop or Adam",
        "SparseAdam": "sparse gradients are not supported; use Adam",
        "Adafactor": "not in tracejit yet; use AdamW",
        "Muon": "not in tracejit yet; use AdamW",
        "swa_utils": "not supported; keep an averaged copy of the parameters yourself",
    },
    "tracejit.jit": {
        "ScriptModule": "tracejit.jit.trace returns a traced module (a TracedFunction)",
        "freeze": "not needed: tracejit.export writes a traced model's weights into its file",
        "optimize_for_inference": "not needed; trace the model in eval() mode",
        "trace_module": "use tracejit.jit.trace(model, example_inputs)",
        "is_scripting": "there is no scripting: always False",
        "is_tracing": "not available; code runs the same eagerly and traced",
        "annotate": "not needed: return the value itself",
        "Final": "not needed: use a plain attribute",
    },
    "tracejit.cuda": {
        "amp": "mixed precision is not supported; train in float32",
        "manual_seed": "draws are made on the host: use tracejit.manual_seed",
        "manual_seed_all": "draws are made on the host: use tracejit.manual_seed",
        "get_rng_state": "draws are made on the host: use tracejit.get_rng_state",
        "set_rng_state": "draws are made on the host: use tracejit.set_rng_state",
        "current_device": "tracejit uses one CUDA device, device 0",
        "set_device": "tracejit uses one CUDA device, device 0",
        "get_device_name": "use numba.cuda.get_current_device().name",
        "memory_allocated": "not tracked; see numba.cuda.current_context().get_memory_info()",
        "max_memory_allocated": "not tracked; see numba.cuda.current_context().get_memory_info()",
        "Stream": "streams are not exposed; kernels run on the default stream",
        "Event": "events are not exposed; time with tracejit.cuda.synchronize() and a clock",
        "CUDAGraph": "not supported; tracejit.trace compiles the whole step instead",
    },
    "tracejit.utils": {
        "checkpoint": "activation checkpointing is not supported",
        "cpp_extension": "C++ extensions are not supported; write the op with Tensor ops",
        "benchmark": "use tracejit's bench CLI (python -m tracejit bench) or timeit",
        "hooks": "use Tensor.register_hook",
        "dlpack": "tracejit tensors implement __dlpack__; use tracejit.from_dlpack",
        "model_zoo": "tracejit downloads nothing; load weights with load_state_dict",
    },
    "tracejit.autograd": {
        "Variable": "Variable is Tensor: use tracejit.tensor(data, requires_grad=True)",
        "forward_ad": "forward-mode AD is not supported; use tracejit.grad (reverse mode)",
        "profiler": "use TRACEJIT_DEBUG=graph and fn.cache_info()",
        "detect_anomaly": "not supported; check gradients with tracejit.autograd.gradcheck",
        "set_detect_anomaly": "not supported; check gradients with "
                              "tracejit.autograd.gradcheck",
    },
}

# pattern rules, per module: (regular expression, advice)
PATTERNS: dict[str, list[tuple[str, str]]] = {
    "tracejit.nn": [
        (r"^Lazy", "lazy modules are not supported; give the input size (e.g. Linear(in, out))"),
        (r"3d$", "3-d (volumetric) layers are not supported; the 1-d and 2-d ones are"),
        (r"^(Reflection|Replication|Circular)Pad", "only zero/constant padding "
         "(tracejit.nn.functional.pad) is supported"),
        (r"(MaxUnpool|FractionalMaxPool|LPPool|AdaptiveMaxPool)", "not supported; use "
         "MaxPool2d, AvgPool2d or AdaptiveAvgPool2d"),
        (r"Loss$", "not in tracejit yet; write it with Tensor ops in a Module (the losses "
         "are MSELoss, L1Loss, SmoothL1Loss, HuberLoss, BCELoss, BCEWithLogitsLoss, NLLLoss, "
         "CrossEntropyLoss, KLDivLoss)"),
        (r"(Shrink|RReLU|AlphaDropout|ChannelShuffle|LocalResponseNorm|CrossMapLRN|Softmax2d)",
         "not in tracejit yet; write it with Tensor ops in forward"),
    ],
    "tracejit.nn.functional": [
        (r"3d$", "3-d (volumetric) ops are not supported; the 1-d and 2-d ones are"),
        (r"_loss$", "not in tracejit yet; write it with Tensor ops (see the losses in "
         "tracejit.nn.functional)"),
        (r"with_indices$|unpool", "pooling indices are not supported"),
        (r"(shrink|rrelu|alpha_dropout|channel_shuffle|local_response_norm|threshold|celu|"
         r"softsign|hardswish|hardsigmoid|prelu|lp_pool|bilinear|dropout[123]d|embedding_bag|"
         r"pairwise_distance|pdist|adaptive_max_pool)", "not in tracejit yet; write it with "
         "Tensor ops"),
    ],
}

# torch functions tracejit does not have yet, answered with the generic advice (_OP) unless
# tracejit has them in nn.functional or as a Tensor method (checked at lookup)
TORCH_OPS = frozenset("""
    abs_ absolute acos acos_ acosh acosh_ adaptive_avg_pool1d adaptive_max_pool1d addbmm
    addcdiv addcmul addmm addmv addmv_ addr adjoint alpha_dropout aminmax angle arccos
    arccos_ arccosh arccosh_ arcsin arcsin_ arcsinh arcsinh_ arctan arctan2 arctan_
    arctanh arctanh_ argwhere as_strided as_strided_ asin asin_ asinh asinh_ atan atan2
    atan_ atanh atanh_ atleast_1d atleast_2d atleast_3d avg_pool1d baddbmm bartlett_window
    batch_norm bilinear binary_cross_entropy_with_logits bincount binomial blackman_window
    block_diag bmm broadcast_shapes bucketize can_cast cartesian_prod cdist ceil_ celu
    celu_ channel_shuffle cholesky cholesky_inverse cholesky_solve clamp_ clamp_max
    clamp_max_ clamp_min clamp_min_ clip_ column_stack combinations concat concatenate
    conj conj_physical conj_physical_ conv1d conv2d conv3d conv_transpose1d
    conv_transpose2d conv_transpose3d copysign corrcoef cos_ cosh_ cosine_embedding_loss
    cosine_similarity count_nonzero cov cross ctc_loss cummax cummin cumprod
    cumulative_trapezoid deg2rad deg2rad_ det detach_ diag diag_embed diagflat diagonal
    diff digamma dist divide dot dropout dsplit dstack embedding embedding_bag
    empty_permuted empty_strided equal erf_ erfc erfc_ erfinv exp2_ exp_ expm1_ fill fill_
    fix fix_ fliplr flipud float_power floor_ floor_divide fmax fmin fmod frac frac_ frexp
    gcd gcd_ geqrf ger get_device gradient greater greater_equal grid_sampler group_norm
    hamming_window hann_window hardshrink heaviside hinge_embedding_loss histc histogram
    histogramdd hsplit hstack hypot i0 i0_ igamma igammac imag index_add index_fill
    index_put index_put_ index_reduce inner instance_norm inverse is_conj is_neg
    is_nonzero is_same_size is_signed isin isneginf isposinf isreal istft kaiser_window
    kl_div kron kthvalue layer_norm lcm lcm_ ldexp ldexp_ less less_equal lgamma log10_
    log1p_ log2_ log_ logaddexp logaddexp2 logcumsumexp logdet logit logit_ logspace lu
    lu_solve lu_unpack margin_ranking_loss masked_select matrix_exp matrix_power
    max_pool1d max_pool1d_with_indices max_pool2d max_pool3d median meshgrid mm mode
    moveaxis movedim msort multiply mv mvlgamma nan_to_num nan_to_num_ nanmean nanmedian
    nanquantile nansum narrow neg_ negative negative_ nextafter not_equal nuclear_norm
    orgqr ormqr outer pairwise_distance pca_lowrank pdist pinverse pixel_shuffle
    pixel_unshuffle poisson_nll_loss polar polygamma positive prelu promote_types put qr
    quantile rad2deg rad2deg_ range ravel real reciprocal_ relu_ renorm repeat_interleave
    resolve_conj resolve_neg result_type rms_norm roll rot90 round_ row_stack rrelu rrelu_
    rsqrt_ rsub scatter scatter_reduce searchsorted select selu selu_ sgn sigmoid_ signbit
    sin_ sinc sinc_ sinh_ slice_scatter slogdet split_with_sizes sqrt_ square_ std_mean
    stft subtract svd svd_lowrank swapaxes swapdims take take_along_dim tan_ tanh_
    tensor_split tensordot threshold threshold_ tile trapezoid trapz tril tril_indices
    triplet_margin_loss triu triu_indices true_divide trunc_ unflatten unique_consecutive
    unravel_index vander var_mean vdot view_as_complex view_as_real vsplit vstack xlogy
    xlogy_ zero_""".split())

_INSTALLED: dict[str, object] = {}


def _resolve(path: str):
    obj = importlib.import_module("tracejit")
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _short(module: str) -> str:
    return module.replace("tracejit", "torch", 1)


def _public(module_name: str) -> list:
    import sys
    mod = sys.modules.get(module_name)
    if mod is None:
        return []
    names = getattr(mod, "__all__", None) or dir(mod)
    return [n for n in names if not n.startswith("_")]


def advice(module: str, name: str) -> str | None:
    """What to use instead of torch's ``<module>.<name>``, or None if it is not a torch name
    tracejit knows of."""
    table = ADVICE.get(module, {})
    if name in table:
        return table[name]
    if module == "tracejit":
        functional = importlib.import_module("tracejit.nn.functional")  # by name: this
        Tensor = importlib.import_module("tracejit.tensor").Tensor  # noqa: N806 - is a core module
        if hasattr(functional, name):
            return f"use tracejit.nn.functional.{name}"
        if hasattr(Tensor, name):
            return f"use the Tensor method: x.{name}(...)"
        if name in TORCH_OPS:
            return _OP
    public = _public(module)
    if name + "_" in public:  # torch's deprecated spellings (nn.init.normal)
        return f"use {module}.{name}_ (torch deprecated the name without the underscore)"
    if name.endswith("_") and name[:-1] in public:  # F.relu_ and friends
        return f"use {module}.{name[:-1]} (or the in-place Tensor method x.{name}())" \
            if module != "tracejit" else f"use x.{name}() or tracejit.{name[:-1]}(x)"
    for pattern, text in PATTERNS.get(module, ()):
        if re.search(pattern, name):
            return text
    if module == "tracejit.cuda" and not difflib.get_close_matches(name, public, cutoff=0.85):
        return (f"not exposed; tracejit.cuda has {', '.join(n for n in public if n.islower())}"
                f" (numba.cuda has the device details)")
    return None


def missing(module: str, name: str) -> AttributeError:
    """The AttributeError for ``module.name``, naming the alternative when there is one."""
    text = advice(module, name)
    if text is not None:
        return AttributeError(f"{module} has no {name} ({_short(module)}.{name}): {text}. "
                              f"See {GUIDE}")
    close = difflib.get_close_matches(name, _public(module), n=3)
    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
    return AttributeError(f"module {module!r} has no attribute {name!r}, and it is not a torch "
                          f"name tracejit knows of{hint} (tracejit._torch_names lists the torch "
                          f"names tracejit lacks; see {GUIDE})")


def _submodule(module: str, name: str):
    """A subpackage not imported yet (``tracejit.utils.tensorboard``): imported and returned,
    so the table never answers for a name tracejit has."""
    import importlib.util
    import sys
    mod = sys.modules.get(module)
    if mod is None or "__path__" not in vars(mod):
        return None
    try:
        spec = importlib.util.find_spec(f"{module}.{name}")
    except (ImportError, ValueError):
        return None
    return importlib.import_module(f"{module}.{name}") if spec is not None else None


def install(module: str):
    """The module ``__getattr__`` for ``module``: ``__getattr__ = install(__name__)``."""
    aliases = ALIASES.get(module, {})

    def __getattr__(name: str):  # noqa: N807 - the module hook
        if name.startswith("__"):
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        if name in aliases:
            return _resolve(aliases[name])
        sub = _submodule(module, name)
        if sub is not None:
            return sub
        raise missing(module, name)

    _INSTALLED[module] = __getattr__
    return __getattr__


# ---------------------------------------------------------------------- Tensor attributes

TENSOR_ALIASES: dict[str, str] = {
    "nelement": "numel", "ndimension": "dim", "absolute": "abs", "multiply": "mul",
    "subtract": "sub", "divide": "div", "true_divide": "div", "negative": "neg",
    "greater": "gt", "greater_equal": "ge", "less": "lt", "less_equal": "le", "not_equal": "ne",
    "swapaxes": "transpose", "swapdims": "transpose", "fix": "trunc",
}

TENSOR_ADVICE: dict[str, str] = {
    "half": f"no float16 dtype; the dtypes are {_DTYPES}",
    "bfloat16": f"no bfloat16 dtype; the dtypes are {_DTYPES}",
    "cfloat": f"no complex dtypes; the dtypes are {_DTYPES}",
    "cdouble": f"no complex dtypes; the dtypes are {_DTYPES}",
    "byte": f"no uint8 dtype; the dtypes are {_DTYPES}",
    "char": f"no int8 dtype; the dtypes are {_DTYPES}",
    "short": f"no int16 dtype; the dtypes are {_DTYPES}",
    "storage": "a tensor's data is a numpy array: t.numpy()",
    "untyped_storage": "a tensor's data is a numpy array: t.numpy()",
    "storage_offset": "a tensor's data is a numpy array: see t.numpy().__array_interface__",
    "pin_memory": "not needed: host arrays are copied to the GPU as they are",
    "is_pinned": "there is no pinned memory: always False",
    "share_memory_": "tensors are not shared across processes; DataLoader workers send "
                     "batches through shared memory themselves",
    "is_shared": "tensors are not shared across processes: always False",
    "to_sparse": "sparse tensors are not supported",
    "is_sparse": "sparse tensors are not supported: always False",
    "to_dense": "tensors are always dense",
    "get_device": "use t.device (t.device.index on CUDA)",
    "apply_": "use a Tensor op, or t.copy_(tracejit.tensor(f(t.numpy())))",
    "map_": "use a Tensor op, or t.copy_(tracejit.tensor(f(t.numpy(), u.numpy())))",
    "names": "named tensors are not supported",
    "refine_names": "named tensors are not supported",
    "rename": "named tensors are not supported",
    "narrow": "use slicing: t[:, start:start + length]",
    "select": "use indexing: t[:, i]",
    "unfold": "Tensor.unfold is not in tracejit yet; use tracejit.nn.functional.unfold for 2-d "
              "windows, or index with arange",
    "as_strided": "not supported (tensors are not strided views of a storage); use "
                  "indexing and reshape",
    "resize_": "not supported; use reshape or make a new tensor",
    "set_": "not supported; assign t.data = other or copy_",
    "is_quantized": "quantization is not supported: always False",
}


def tensor_attribute_error(name: str) -> AttributeError:
    """The AttributeError for ``tensor.<name>``: says so and names the alternative."""
    if name.startswith("_"):
        return AttributeError(f"'Tensor' object has no attribute {name!r}")
    text = TENSOR_ADVICE.get(name)
    if text is None and name in TORCH_OPS:
        text = _OP
    if text is not None:
        return AttributeError(f"tracejit.Tensor has no {name} (torch.Tensor.{name}): {text}. "
                              f"See {GUIDE}")
    Tensor = importlib.import_module("tracejit.tensor").Tensor  # noqa: N806
    public = [n for n in dir(Tensor) if not n.startswith("_")]
    close = difflib.get_close_matches(name, public, n=3)
    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
    return AttributeError(f"'Tensor' object has no attribute {name!r}, and it is not a torch "
                          f"Tensor attribute tracejit knows of{hint} (see {GUIDE})")


def tensor_getattr(self, name: str):
    """``Tensor.__getattr__``: reached only when normal lookup fails."""
    for klass in type(self).__mro__:
        attr = vars(klass).get(name)
        if attr is not None and hasattr(attr, "__get__"):
            # a property or slot of the class raised: its own error, not the table's
            return attr.__get__(self, type(self))
    target = TENSOR_ALIASES.get(name)
    if target is not None:
        return getattr(self, target)
    raise tensor_attribute_error(name)
