"""Golden values for max_pool2d, avg_pool2d and adaptive_avg_pool2d (engine/ops/pool.cpp)."""
import torch
import torch.nn.functional as F

from golden import case, write

g = torch.Generator().manual_seed(0)


def rn(*shape):
    return torch.randn(*shape, generator=g)


TOL = {"rtol": 1e-5, "atol": 1e-6}


def _pair(v):
    return None if v is None else ([v, v] if isinstance(v, int) else list(v))


def maxp(name, x, kernel, stride=None, padding=0, ceil_mode=False):
    params = {"kernel": _pair(kernel), "stride": _pair(stride), "padding": _pair(padding), "ceil_mode": ceil_mode}
    return case(name, "max_pool2d",
                lambda x, kernel, stride, padding, ceil_mode: F.max_pool2d(x, kernel, stride, padding, ceil_mode=ceil_mode),
                [x], params, **TOL)


def avgp(name, x, kernel, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    params = {"kernel": _pair(kernel), "stride": _pair(stride), "padding": _pair(padding), "ceil_mode": ceil_mode,
              "count_include_pad": count_include_pad}
    return case(name, "avg_pool2d",
                lambda x, kernel, stride, padding, ceil_mode, count_include_pad:
                F.avg_pool2d(x, kernel, stride, padding, ceil_mode, count_include_pad),
                [x], params, **TOL)


def adaptive(name, x, size):
    return case(name, "adaptive_avg_pool2d", lambda x, size: F.adaptive_avg_pool2d(x, size), [x], {"size": _pair(size)},
                **TOL)


cases = [
    maxp("max_k2", rn(2, 2, 4, 4), 2),
    maxp("max_k3_s2_p1", rn(1, 2, 6, 6), 3, 2, 1),
    maxp("max_k3_s2_odd", rn(1, 2, 7, 5), 3, 2),
    maxp("max_ceil", rn(1, 2, 6, 6), 3, 2, 0, True),
    # ceil_mode where the last window would start in the right padding and is dropped
    maxp("max_ceil_drop_last", rn(1, 2, 5, 5), 2, 2, 1, True),
    maxp("max_nonsquare", rn(1, 2, 5, 7), (2, 3), (1, 2), (1, 1)),
    avgp("avg_k2", rn(2, 2, 4, 4), 2),
    avgp("avg_k3_s2_p1_incl", rn(1, 2, 5, 5), 3, 2, 1, False, True),
    avgp("avg_k3_s2_p1_excl", rn(1, 2, 5, 5), 3, 2, 1, False, False),
    avgp("avg_ceil_incl", rn(1, 2, 6, 6), 3, 2, 1, True, True),
    avgp("avg_ceil_excl", rn(1, 2, 6, 6), 3, 2, 1, True, False),
    avgp("avg_ceil_drop_last", rn(1, 2, 5, 5), 2, 2, 1, True, True),
    avgp("avg_ceil_nopad", rn(1, 2, 5, 5), 2, 2, 0, True, True),
    avgp("avg_nonsquare", rn(1, 2, 5, 7), (3, 2), (2, 1), (1, 0)),
    adaptive("adaptive_1x1", rn(2, 3, 4, 5), 1),
    adaptive("adaptive_divisible", rn(1, 2, 4, 6), (2, 3)),
    adaptive("adaptive_nondivisible", rn(1, 2, 5, 7), (3, 2)),
    adaptive("adaptive_overlapping", rn(1, 2, 6, 6), 4),
    adaptive("adaptive_upsample", rn(1, 1, 3, 2), (5, 4)),
]

write("golden_pool.json", cases)
