"""Golden values for the elementwise ops (engine/ops/elementwise.cpp)."""
import torch
import torch.nn.functional as F

from golden import case, write

g = torch.Generator().manual_seed(0)


def rn(*shape):
    return torch.randn(*shape, generator=g)


def pos(*shape):  # strictly positive, away from 0
    return torch.rand(*shape, generator=g) * 2 + 0.1


cases = [
    case("add_same", "add", torch.add, [rn(3, 4), rn(3, 4)]),
    case("add_broadcast", "add", torch.add, [rn(2, 1, 4), rn(3, 1)]),
    case("sub_broadcast", "sub", torch.sub, [rn(4), rn(2, 3, 4)]),
    case("mul_broadcast", "mul", torch.mul, [rn(2, 3, 1), rn(1, 3, 5)]),
    case("div_broadcast", "div", torch.div, [rn(2, 3), pos(3)]),
    case("maximum", "maximum", torch.maximum, [rn(3, 4), rn(4)]),
    case("minimum", "minimum", torch.minimum, [rn(3, 4), rn(3, 1)]),
    case("add_scalar", "add_scalar", lambda a, s: a + s, [rn(2, 3)], {"s": 1.5}),
    case("mul_scalar", "mul_scalar", lambda a, s: a * s, [rn(2, 3)], {"s": -2.5}),
    case("div_scalar", "div_scalar", lambda a, s: a / s, [rn(2, 3)], {"s": 3.0}),
    case("rsub_scalar", "rsub_scalar", lambda a, s: s - a, [rn(2, 3)], {"s": 0.5}),
    case("neg", "neg", torch.neg, [rn(5)]),
    case("pow_scalar", "pow_scalar", lambda a, e: torch.pow(a, e), [pos(3, 3)], {"e": 2.5}),
    case("pow_int", "pow_scalar", lambda a, e: torch.pow(a, e), [rn(3, 3)], {"e": 3.0}),
    case("pow_tensor", "pow", torch.pow, [pos(2, 3), rn(3)]),
    case("exp", "exp", torch.exp, [rn(2, 5)]),
    case("log", "log", torch.log, [pos(2, 5)]),
    case("sqrt", "sqrt", torch.sqrt, [pos(2, 5)]),
    case("rsqrt", "rsqrt", torch.rsqrt, [pos(2, 5)]),
    case("abs", "abs", torch.abs, [rn(4, 4)]),
    case("clamp_both", "clamp", lambda a, lo, hi: torch.clamp(a, lo, hi), [rn(4, 5)], {"lo": -0.5, "hi": 0.7}),
    case("clamp_min", "clamp", lambda a, lo, hi: torch.clamp(a, min=lo), [rn(4, 5)], {"lo": 0.1, "hi": None}),
    case("relu", "relu", torch.relu, [rn(3, 7)]),
    case("relu6", "relu6", F.relu6, [rn(3, 7) * 5]),
    case("sigmoid", "sigmoid", torch.sigmoid, [rn(3, 7) * 4]),
    case("tanh", "tanh", torch.tanh, [rn(3, 7)]),
    case("gelu", "gelu", lambda a, tanh: F.gelu(a, approximate="tanh" if tanh else "none"), [rn(3, 7) * 2], {"tanh": False}),
    case("gelu_tanh", "gelu", lambda a, tanh: F.gelu(a, approximate="tanh" if tanh else "none"), [rn(3, 7) * 2], {"tanh": True}),
    case("where", "where", torch.where, [rn(3, 4) > 0, rn(3, 4), rn(4)]),
    case("masked_fill", "masked_fill", lambda a, m, v: a.masked_fill(m, v), [rn(3, 4), rn(4) > 0], {"v": -3.0}),
    case("eq", "eq", torch.eq, [torch.tensor([1., 2, 3, 4]), torch.tensor([1., 0, 3, 5])], grad=False),
    case("lt", "lt", torch.lt, [rn(3, 4), rn(4)], grad=False),
    case("ge", "ge", torch.ge, [rn(3, 4), rn(3, 1)], grad=False),
]
# transposed (non-contiguous) input: the C++ side transposes input 0 before the op
cases.append(case("mul_transposed", "mul_t0", lambda a, b: a.t() * b, [rn(4, 3), rn(3, 4)]))

write("golden_elementwise.json", cases)
