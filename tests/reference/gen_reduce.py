"""Golden values for the reductions (engine/ops/reduce.cpp)."""
import torch

from golden import case, write

g = torch.Generator().manual_seed(1)


def rn(*shape):
    return torch.randn(*shape, generator=g)


def ties(*shape):  # small integers as floats: many ties, to check first-occurrence indices
    return torch.randint(0, 3, shape, generator=g).float()


def p_json(p):  # JSON has no infinity
    return "inf" if p == float("inf") else p


def max_dim(a, dim, keepdim):
    v, i = torch.max(a, dim, keepdim)
    return v, i


def min_dim(a, dim, keepdim):
    v, i = torch.min(a, dim, keepdim)
    return v, i


def norm(a, p, dims, keepdim):
    p = float("inf") if p == "inf" else p
    return torch.linalg.vector_norm(a, p, dim=dims if dims else None, keepdim=keepdim)


def var(a, dims, unbiased, keepdim):
    return torch.var(a, dim=dims if dims else None, unbiased=unbiased, keepdim=keepdim)


def sum_(a, dims, keepdim):
    return torch.sum(a, dim=dims, keepdim=keepdim) if dims else torch.sum(a)


def mean_(a, dims, keepdim):
    return torch.mean(a, dim=dims, keepdim=keepdim) if dims else torch.mean(a)


cases = [
    case("sum_all", "sum", sum_, [rn(3, 4)], {"dims": [], "keepdim": False}),
    case("sum_dims_keep", "sum", sum_, [rn(2, 3, 4)], {"dims": [0, -1], "keepdim": True}),
    case("mean_dim", "mean", mean_, [rn(2, 3, 4)], {"dims": [1], "keepdim": False}),
    case("var_all_unbiased", "var", var, [rn(3, 5)], {"dims": [], "unbiased": True, "keepdim": False}),
    case("var_dim_biased", "var", var, [rn(3, 5)], {"dims": [1], "unbiased": False, "keepdim": False}),
    case("var_dims_keep", "var", var, [rn(2, 3, 4)], {"dims": [0, 2], "unbiased": True, "keepdim": True}),
    case("var_negdim", "var", var, [rn(4, 3)], {"dims": [-2], "unbiased": True, "keepdim": False}),
    case("logsumexp_dim", "logsumexp", torch.logsumexp, [rn(3, 5)], {"dim": [1], "keepdim": False}),
    case("logsumexp_keep", "logsumexp", torch.logsumexp, [rn(2, 3, 4)], {"dim": [-1], "keepdim": True}),
    case("logsumexp_dims", "logsumexp", torch.logsumexp, [rn(2, 3, 4)], {"dim": [0, 2], "keepdim": False}),
    # large values: exp would overflow without subtracting the max
    case("logsumexp_large", "logsumexp", torch.logsumexp, [rn(3, 4) * 30 + 200], {"dim": [1], "keepdim": False},
         rtol=1e-5, atol=1e-4),
    case("logsumexp_very_negative", "logsumexp", torch.logsumexp, [rn(3, 4) * 30 - 200], {"dim": [0], "keepdim": False},
         rtol=1e-5, atol=1e-4),
    case("norm2_all", "norm", norm, [rn(3, 4)], {"p": 2.0, "dims": [], "keepdim": False}),
    case("norm2_dim", "norm", norm, [rn(3, 4)], {"p": 2.0, "dims": [1], "keepdim": False}),
    case("norm1_keep", "norm", norm, [rn(2, 3, 4)], {"p": 1.0, "dims": [-1], "keepdim": True}),
    case("norm3_dims", "norm", norm, [rn(2, 3, 4)], {"p": 3.0, "dims": [0, 2], "keepdim": False}, rtol=1e-4, atol=1e-5),
    case("norm_half", "norm", norm, [rn(3, 4)], {"p": 0.5, "dims": [1], "keepdim": False}, rtol=1e-4, atol=1e-5),
    case("norm_inf", "norm", norm, [rn(3, 4)], {"p": "inf", "dims": [1], "keepdim": False}),
    case("norm2_zero_row", "norm", norm, [torch.tensor([[0., 0., 0.], [3., 4., 0.]])],
         {"p": 2.0, "dims": [1], "keepdim": False}),
    case("max_dim_ties", "max_dim", max_dim, [ties(4, 5)], {"dim": 1, "keepdim": False}),
    case("max_dim0_keep", "max_dim", max_dim, [rn(3, 4, 2)], {"dim": 0, "keepdim": True}),
    case("min_dim_ties", "min_dim", min_dim, [ties(4, 5)], {"dim": -1, "keepdim": False}),
    case("min_dim_keep", "min_dim", min_dim, [rn(2, 3, 4)], {"dim": 1, "keepdim": True}),
    case("max_all", "max_all", torch.max, [rn(3, 4)]),
    case("max_all_ties", "max_all", torch.max, [torch.tensor([[1., 3., 0.], [3., 2., 3.]])]),
    case("min_all_ties", "min_all", torch.min, [torch.tensor([[1., -3., 0.], [-3., 2., 3.]])]),
    case("argmax", "argmax", torch.argmax, [ties(4, 5)], {"dim": 1, "keepdim": False}, grad=False),
    case("argmax_keep", "argmax", torch.argmax, [rn(3, 4, 2)], {"dim": -2, "keepdim": True}, grad=False),
    case("argmin", "argmin", torch.argmin, [ties(4, 5)], {"dim": 0, "keepdim": False}, grad=False),
    # non-contiguous input: the C++ side transposes input 0 before the op
    case("var_t0", "var_t0", lambda a, **k: var(a.t(), **k), [rn(4, 3)], {"dims": [1], "unbiased": True, "keepdim": False}),
    case("logsumexp_t0", "logsumexp_t0", lambda a, **k: torch.logsumexp(a.t(), **k), [rn(4, 3)],
         {"dim": [1], "keepdim": False}),
    case("norm_t0", "norm_t0", lambda a, **k: norm(a.t(), **k), [rn(4, 3)], {"p": 2.0, "dims": [0], "keepdim": True}),
    case("max_dim_t0", "max_dim_t0", lambda a, **k: max_dim(a.t(), **k), [rn(4, 3)], {"dim": 1, "keepdim": False}),
]

# The C++ side promises the first occurrence on ties; make sure PyTorch's answers here agree.
for c in cases:
    if c["op"] in ("max_dim", "min_dim", "argmax", "argmin"):
        x = torch.tensor(c["inputs"][0]["data"]).reshape(c["inputs"][0]["shape"])
        dim = c["params"]["dim"]
        pick = torch.max if c["op"] in ("max_dim", "argmax") else torch.min
        best = pick(x, dim, keepdim=True).values
        first = (x == best).float().argmax(dim, keepdim=c["params"]["keepdim"])  # first 1 along dim
        got = torch.tensor(c["outputs"][-1]["data"]).reshape(first.shape)
        assert torch.equal(got, first), c["name"]
write("golden_reduce.json", cases)
