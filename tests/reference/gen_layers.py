"""Golden values for the nn layers (nn/layers.cpp): each layer filled with golden.det_fill,
run on a small input in train mode; outputs, the input's gradient, and (BatchNorm) the running
statistics and num_batches_tracked after the call."""
import torch
import torch.nn as nn

from golden import case, det_fill, write

g = torch.Generator().manual_seed(3)


def rn(*shape):
    return torch.randn(*shape, generator=g)


def run_layer(layer, train=True, extra=None):
    det_fill(layer)
    layer.train(train)

    def fn(x, **_params):
        y = layer(x)
        outs = [y]
        if extra:
            outs += [getattr(layer, n).detach().clone().float() for n in extra]
        return tuple(outs)
    return fn


cases = [
    case("conv2d", "conv2d", run_layer(nn.Conv2d(3, 4, 3, stride=2, padding=1)), [rn(2, 3, 7, 6)], rtol=1e-4, atol=1e-5),
    case("conv2d_groups_nobias", "conv2d_g", run_layer(nn.Conv2d(4, 6, (3, 1), padding=(1, 0), groups=2, bias=False)),
         [rn(2, 4, 5, 5)], rtol=1e-4, atol=1e-5),
    case("conv_transpose2d", "convt", run_layer(nn.ConvTranspose2d(4, 3, 4, stride=2, padding=1)), [rn(2, 4, 3, 3)],
         rtol=1e-4, atol=1e-5),
    case("batchnorm2d_train", "bn2d", run_layer(nn.BatchNorm2d(3), True, ["running_mean", "running_var", "num_batches_tracked"]),
         [rn(4, 3, 2, 3)]),
    case("batchnorm2d_eval", "bn2d_eval", run_layer(nn.BatchNorm2d(3), False), [rn(4, 3, 2, 3)]),
    case("batchnorm1d_train", "bn1d", run_layer(nn.BatchNorm1d(5, momentum=0.3), True, ["running_mean", "running_var"]),
         [rn(6, 5)], params={"momentum": 0.3}),
    case("linear", "linear", run_layer(nn.Linear(5, 3)), [rn(2, 4, 5)], rtol=1e-5, atol=1e-5),
    case("layernorm", "layernorm", run_layer(nn.LayerNorm([4, 5])), [rn(3, 4, 5)]),
    case("sequential", "sequential", run_layer(nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(),
                                                             nn.MaxPool2d(2), nn.Flatten(), nn.Linear(3 * 2 * 2, 4))),
         [rn(2, 2, 4, 4)], rtol=1e-4, atol=1e-5),
]
write("golden_layers.json", cases)
