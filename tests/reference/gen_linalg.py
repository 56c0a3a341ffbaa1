"""Golden values for matmul, bmm and linear (engine/ops/linalg.cpp)."""
import torch
import torch.nn.functional as F

from golden import case, write

g = torch.Generator().manual_seed(0)


def rn(*shape):
    return torch.randn(*shape, generator=g)


TOL = {"rtol": 1e-4, "atol": 1e-5}

cases = [
    case("mm_2d", "matmul", torch.matmul, [rn(3, 4), rn(4, 5)], **TOL),
    case("dot_1d", "matmul", torch.matmul, [rn(5), rn(5)], **TOL),
    case("vec_mat", "matmul", torch.matmul, [rn(4), rn(4, 3)], **TOL),
    case("mat_vec", "matmul", torch.matmul, [rn(3, 4), rn(4)], **TOL),
    case("batched_same", "matmul", torch.matmul, [rn(2, 3, 4), rn(2, 4, 2)], **TOL),
    case("batched_broadcast", "matmul", torch.matmul, [rn(2, 1, 3, 4), rn(3, 4, 2)], **TOL),
    case("batched_times_2d", "matmul", torch.matmul, [rn(2, 3, 4), rn(4, 5)], **TOL),
    case("2d_times_batched", "matmul", torch.matmul, [rn(3, 4), rn(2, 4, 5)], **TOL),
    case("vec_times_batched", "matmul", torch.matmul, [rn(4), rn(2, 4, 3)], **TOL),
    case("batched_times_vec", "matmul", torch.matmul, [rn(2, 3, 4), rn(4)], **TOL),
    case("odd_sizes", "matmul", torch.matmul, [rn(7, 5), rn(5, 9)], **TOL),
    # non-contiguous operands: the C++ side builds the same views before the product
    case("a_bt", "matmul_bt", lambda a, b: a @ b.t(), [rn(3, 4), rn(5, 4)], **TOL),
    case("at_b_batched", "matmul_at", lambda a, b: a.transpose(-1, -2) @ b, [rn(2, 4, 3), rn(2, 4, 5)], **TOL),
    case("bmm", "bmm", torch.bmm, [rn(3, 2, 4), rn(3, 4, 3)], **TOL),
    case("linear_3d_bias", "linear", F.linear, [rn(2, 3, 4), rn(5, 4), rn(5)], **TOL),
    case("linear_2d_nobias", "linear", F.linear, [rn(3, 4), rn(2, 4), None], **TOL),
    case("linear_1d", "linear", F.linear, [rn(4), rn(3, 4), rn(3)], **TOL),
    case("linear_4d", "linear", F.linear, [rn(2, 2, 3, 4), rn(3, 4), rn(3)], **TOL),
]

write("golden_linalg.json", cases)
