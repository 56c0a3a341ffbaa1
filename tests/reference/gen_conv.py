"""Golden values for conv2d and conv_transpose2d (engine/ops/conv.cpp)."""
import torch
import torch.nn.functional as F

from golden import case, write

g = torch.Generator().manual_seed(0)


def rn(*shape):
    return torch.randn(*shape, generator=g)


TOL = {"rtol": 1e-4, "atol": 1e-5}


def conv(name, x, w, b, stride=1, padding=0, dilation=1, groups=1):
    params = {"stride": list(_pair(stride)), "padding": list(_pair(padding)), "dilation": list(_pair(dilation)),
              "groups": groups}
    return case(name, "conv2d",
                lambda x, w, b, stride, padding, dilation, groups: F.conv2d(x, w, b, stride, padding, dilation, groups),
                [x, w, b], params, **TOL)


def convt(name, x, w, b, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    params = {"stride": list(_pair(stride)), "padding": list(_pair(padding)),
              "output_padding": list(_pair(output_padding)), "groups": groups, "dilation": list(_pair(dilation))}
    return case(name, "conv_transpose2d",
                lambda x, w, b, stride, padding, output_padding, groups, dilation:
                F.conv_transpose2d(x, w, b, stride, padding, output_padding, groups, dilation),
                [x, w, b], params, **TOL)


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


cases = [
    conv("basic_pad1", rn(2, 2, 4, 5), rn(3, 2, 3, 3), rn(3), padding=1),
    conv("stride2_pad1", rn(2, 2, 6, 6), rn(3, 2, 3, 3), rn(3), stride=2, padding=1),
    conv("stride2_odd_input", rn(1, 2, 7, 5), rn(2, 2, 3, 3), None, stride=2),
    conv("dilation2", rn(1, 2, 7, 6), rn(3, 2, 3, 3), rn(3), padding=2, dilation=2),
    conv("groups2", rn(1, 4, 5, 5), rn(6, 2, 3, 3), rn(6), padding=1, groups=2),
    conv("depthwise", rn(2, 3, 4, 4), rn(3, 1, 3, 3), rn(3), padding=1, groups=3),
    conv("depthwise_multiplier2", rn(1, 2, 5, 4), rn(4, 1, 3, 3), None, stride=2, padding=1, groups=2),
    conv("pointwise_1x1", rn(2, 5, 3, 3), rn(3, 5, 1, 1), rn(3)),
    conv("1x1_stride2", rn(1, 3, 5, 5), rn(2, 3, 1, 1), None, stride=2),
    conv("nonsquare", rn(1, 3, 6, 9), rn(2, 3, 2, 4), rn(2), stride=(1, 2), padding=(1, 0)),
    conv("batch1_channels5to7", rn(1, 5, 3, 4), rn(7, 5, 2, 2), rn(7), padding=1),
    conv("no_bias_valid", rn(2, 3, 4, 4), rn(2, 3, 2, 2), None),
    # non-contiguous input: the C++ side swaps H and W of input 0 (a transposed view) first
    case("input_transposed", "conv2d_xt",
         lambda x, w, b: F.conv2d(x.transpose(2, 3), w, b, padding=1), [rn(1, 2, 5, 4), rn(3, 2, 3, 3), rn(3)], **TOL),
    convt("t_stride2_outpad1", rn(2, 3, 3, 3), rn(3, 2, 3, 3), rn(2), stride=2, padding=1, output_padding=1),
    convt("t_groups2", rn(1, 4, 3, 4), rn(4, 2, 3, 3), rn(4), groups=2),
    convt("t_stride2_dilation2", rn(1, 2, 3, 3), rn(2, 3, 2, 2), None, stride=2, dilation=2, output_padding=1),
    convt("t_outpad_below_dilation", rn(1, 2, 3, 3), rn(2, 2, 3, 3), rn(2), dilation=2, output_padding=1),
    convt("t_nonsquare", rn(1, 3, 3, 4), rn(3, 2, 2, 3), rn(2), stride=(2, 1), padding=(0, 1)),
    convt("t_depthwise_stride2", rn(1, 3, 3, 3), rn(3, 1, 4, 4), None, stride=2, padding=1, groups=3),
    convt("t_1x1", rn(2, 3, 3, 2), rn(3, 2, 1, 1), rn(2)),
]

write("golden_conv.json", cases)
