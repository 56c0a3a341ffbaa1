"""Golden values for softmax, log_softmax and normalize (engine/ops/activation.cpp)."""
import torch
import torch.nn.functional as F

from golden import case, write

g = torch.Generator().manual_seed(0)


def rn(*shape):
    return torch.randn(*shape, generator=g)


sm = lambda x, dim: F.softmax(x, dim=dim)
lsm = lambda x, dim: F.log_softmax(x, dim=dim)
nz = lambda x, p, dim, eps: F.normalize(x, p=p, dim=dim, eps=eps)

# a row with a small norm, so that eps = 0.5 clamps it (the gradient then skips the norm)
small = rn(3, 4)
small[1] *= 0.05

cases = []
for dim in (0, 1, -1):
    cases.append(case(f"softmax_dim{dim}", "softmax", sm, [rn(2, 3, 4)], {"dim": dim}))
    cases.append(case(f"log_softmax_dim{dim}", "log_softmax", lsm, [rn(2, 3, 4)], {"dim": dim}))
cases += [
    case("softmax_1d", "softmax", sm, [rn(5)], {"dim": 0}),
    case("softmax_large_logits", "softmax", sm, [rn(3, 5) * 100 + 1000], {"dim": 1}, atol=1e-5),
    case("log_softmax_large_logits", "log_softmax", lsm, [rn(3, 5) * 100 - 1000], {"dim": 1}, rtol=1e-5, atol=1e-4),
    # transposed input: the C++ side transposes input 0 before the op
    case("softmax_transposed", "softmax_t0", lambda x, dim: F.softmax(x.t(), dim=dim), [rn(4, 3)], {"dim": 1}),
    case("log_softmax_transposed", "log_softmax_t0", lambda x, dim: F.log_softmax(x.t(), dim=dim), [rn(4, 3)], {"dim": 0}),
    case("normalize_p2_dim1", "normalize", nz, [rn(3, 4)], {"p": 2.0, "dim": 1, "eps": 1e-12}),
    case("normalize_p2_dim0_3d", "normalize", nz, [rn(3, 2, 4)], {"p": 2.0, "dim": 0, "eps": 1e-12}),
    case("normalize_p1", "normalize", nz, [rn(3, 4)], {"p": 1.0, "dim": -1, "eps": 1e-12}),
    case("normalize_p3", "normalize", nz, [rn(2, 5)], {"p": 3.0, "dim": 1, "eps": 1e-12}),
    case("normalize_clamped_row", "normalize", nz, [small], {"p": 2.0, "dim": 1, "eps": 0.5}),
]

write("golden_activation.json", cases)
