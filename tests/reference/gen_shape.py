"""Golden values for the shape and indexing ops (engine/ops/shape.cpp) and the view methods of
Tensor (engine/ops/views.cpp)."""
import torch
import torch.nn.functional as F

from golden import case, write

g = torch.Generator().manual_seed(2)


def rn(*shape):
    return torch.randn(*shape, generator=g)


def idx(values):
    return torch.tensor(values, dtype=torch.int64)


def cat(*ts, dim):
    return torch.cat(ts, dim)


def stack(*ts, dim):
    return torch.stack(ts, dim)


def split(a, size, dim):
    return tuple(torch.split(a, size, dim))


def chunk(a, chunks, dim):
    return tuple(torch.chunk(a, chunks, dim))


def pad(a, pads, value):
    return F.pad(a, pads, value=value)


cases = [
    # ---- cat / stack / split / chunk
    case("cat_dim0", "cat", cat, [rn(2, 3), rn(1, 3), rn(3, 3)], {"dim": 0}),
    case("cat_dim1", "cat", cat, [rn(2, 1, 2), rn(2, 3, 2)], {"dim": 1}),
    case("cat_negdim", "cat", cat, [rn(2, 2), rn(2, 1), rn(2, 3)], {"dim": -1}),
    case("stack_dim0", "stack", stack, [rn(2, 3), rn(2, 3)], {"dim": 0}),
    case("stack_last", "stack", stack, [rn(2, 3), rn(2, 3), rn(2, 3)], {"dim": -1}),
    case("split", "split", split, [rn(5, 2)], {"size": 2, "dim": 0}),
    case("split_dim1", "split", split, [rn(2, 7)], {"size": 3, "dim": -1}),
    case("chunk", "chunk", chunk, [rn(2, 5)], {"chunks": 3, "dim": 1}),
    case("chunk_even", "chunk", chunk, [rn(6, 2)], {"chunks": 3, "dim": 0}),
    # ---- index_select / gather
    case("index_select_dim0", "index_select", lambda a, i, dim: torch.index_select(a, dim, i),
         [rn(4, 3), idx([3, 0, 3, 1])], {"dim": 0}),
    case("index_select_dim1", "index_select", lambda a, i, dim: torch.index_select(a, dim, i),
         [rn(2, 4, 3), idx([2, 2])], {"dim": -2}),
    case("gather_dim1", "gather", lambda a, i, dim: torch.gather(a, dim, i),
         [rn(3, 4), idx([[0, 0, 3], [1, 2, 1], [3, 3, 3]])], {"dim": 1}),
    case("gather_dim0_small_index", "gather", lambda a, i, dim: torch.gather(a, dim, i),
         [rn(3, 4), idx([[2, 0], [1, 1], [0, 2], [2, 2]])], {"dim": 0}),
    case("gather_3d", "gather", lambda a, i, dim: torch.gather(a, dim, i),
         [rn(2, 3, 2), idx([[[1, 0]], [[2, 2]]])], {"dim": 1}),
    # ---- scatter / scatter_add (unique targets for scatter: with repeats PyTorch's result is unspecified)
    case("scatter_dim1", "scatter", lambda a, i, s, dim: a.scatter(dim, i, s),
         [rn(3, 5), idx([[0, 4], [2, 1], [3, 0]]), rn(3, 2)], {"dim": 1}),
    case("scatter_dim0", "scatter", lambda a, i, s, dim: a.scatter(dim, i, s),
         [rn(4, 3), idx([[3, 0, 1], [1, 2, 0]]), rn(2, 3)], {"dim": 0}),
    case("scatter_add_repeats", "scatter_add", lambda a, i, s, dim: a.scatter_add(dim, i, s),
         [rn(3, 4), idx([[0, 0, 1], [3, 3, 3], [2, 1, 2]]), rn(3, 3)], {"dim": 1}),
    case("scatter_add_dim0", "scatter_add", lambda a, i, s, dim: a.scatter_add(dim, i, s),
         [rn(3, 2), idx([[2, 0], [2, 2]]), rn(2, 2)], {"dim": -2}),
    # ---- one_hot
    case("one_hot", "one_hot", lambda y, k: F.one_hot(y, k).float(), [idx([0, 3, 1, 3, 2])], {"k": 4}),
    case("one_hot_2d", "one_hot", lambda y, k: F.one_hot(y, k).float(), [idx([[0, 2], [1, 1]])], {"k": 3}),
    # ---- pad (F.pad order: last dim first)
    case("pad_last", "pad", pad, [rn(2, 3)], {"pads": [1, 2], "value": 0.0}),
    case("pad_two_dims", "pad", pad, [rn(2, 2, 3)], {"pads": [0, 1, 2, 1], "value": -1.5}),
    case("pad_negative", "pad", pad, [rn(3, 4)], {"pads": [-1, 2, 1, -2], "value": 0.5}),
    # ---- view methods of Tensor
    case("reshape", "reshape", lambda a, shape: a.reshape(shape), [rn(2, 6)], {"shape": [3, -1, 2]}),
    case("reshape_t0", "reshape_t0", lambda a, shape: a.t().reshape(shape), [rn(3, 4)], {"shape": [2, 6]}),
    case("permute", "permute", lambda a, dims: a.permute(dims).contiguous(), [rn(2, 3, 4)], {"dims": [2, 0, 1]}),
    case("transpose", "transpose", lambda a, d0, d1: a.transpose(d0, d1), [rn(2, 3, 4)], {"d0": 0, "d1": -1}),
    case("slice_step", "slice", lambda a, dim, start, end, step: a[:, start:end:step], [rn(3, 8)],
         {"dim": 1, "start": 1, "end": 7, "step": 2}),
    case("select", "select", lambda a, dim, index: a.select(dim, index), [rn(3, 4)], {"dim": 1, "index": -1}),
    case("expand", "expand", lambda a, shape: a.expand(shape), [rn(3, 1)], {"shape": [2, 3, 4]}),
    case("flatten", "flatten", lambda a, s, e: a.flatten(s, e), [rn(2, 3, 2, 2)], {"s": 1, "e": 2}),
    case("squeeze_unsqueeze", "squeeze_unsqueeze", lambda a: a.squeeze(1).unsqueeze(0), [rn(3, 1, 2)]),
]

write("golden_shape.json", cases)
