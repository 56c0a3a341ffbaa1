"""Golden values for batch_norm and layer_norm (engine/ops/norm.cpp).

batch_norm cases also return the running statistics after the call (updated in place in
training mode), so the C++ test checks the momentum update with the unbiased variance.
dropout draws from kdlab's own Generator, so it is tested by its statistics in C++ instead.
"""
import torch
import torch.nn.functional as F

from golden import case, write

g = torch.Generator().manual_seed(0)


def rn(*shape):
    return torch.randn(*shape, generator=g)


def pos(*shape):
    return torch.rand(*shape, generator=g) + 0.5


def bn(x, w, b, rm, rv, training, momentum, eps):
    # clone: the running stats are updated in place, and the recorded inputs must be the originals
    rm = rm.clone() if rm is not None else None
    rv = rv.clone() if rv is not None else None
    y = F.batch_norm(x, rm, rv, w, b, training=training, momentum=momentum, eps=eps)
    return (y, rm, rv) if rm is not None else y


def bn_case(name, x, w, b, rm, rv, training, momentum=0.1, eps=1e-5, **kw):
    return case(name, "batch_norm", bn, [x, w, b, rm, rv],
                {"training": training, "momentum": momentum, "eps": eps}, no_grad=[3, 4], **kw)


def ln(x, w, b, normalized_shape, eps):
    return F.layer_norm(x, normalized_shape, w, b, eps)


cases = [
    bn_case("bn_train_2d", rn(6, 3) * 2 + 1, pos(3), rn(3), rn(3), pos(3), True),
    bn_case("bn_train_4d", rn(2, 3, 2, 2), pos(3), rn(3), rn(3), pos(3), True, momentum=0.3),
    bn_case("bn_train_3d_eps", rn(3, 2, 4), pos(2), rn(2), rn(2), pos(2), True, eps=1e-3),
    bn_case("bn_train_no_affine_no_stats", rn(4, 3, 2), None, None, None, None, True),
    bn_case("bn_train_weight_only", rn(5, 2), pos(2), None, torch.zeros(2), torch.ones(2), True),
    bn_case("bn_eval_4d", rn(2, 3, 2, 2), pos(3), rn(3), rn(3), pos(3), False),
    bn_case("bn_eval_2d_no_affine", rn(4, 3), None, None, rn(3), pos(3), False),
    bn_case("bn_eval_bias_only", rn(3, 2, 3), None, rn(2), rn(2), pos(2), False),
    case("ln_last", "layer_norm", ln, [rn(2, 3, 4), pos(4), rn(4)], {"normalized_shape": [4], "eps": 1e-5}),
    case("ln_last2", "layer_norm", ln, [rn(2, 3, 4) * 3, pos(3, 4), rn(3, 4)], {"normalized_shape": [3, 4], "eps": 1e-5}),
    case("ln_no_affine", "layer_norm", ln, [rn(4, 5), None, None], {"normalized_shape": [5], "eps": 1e-5}),
    case("ln_eps_weight_only", "layer_norm", ln, [rn(3, 6), pos(6), None], {"normalized_shape": [6], "eps": 1e-2}),
    case("ln_all_dims", "layer_norm", ln, [rn(2, 3), pos(2, 3), rn(2, 3)], {"normalized_shape": [2, 3], "eps": 1e-5}),
]

write("golden_norm.json", cases)
