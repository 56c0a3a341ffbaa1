"""Golden values for the image transforms (datasets/transforms.cpp).

torchvision is not installed here, so its semantics are written out in plain torch, from its
documentation and source (torchvision.transforms, v0.14):
  ToTensor              x = img.float() / 255
  RandomCrop(H, padding=p, fill=0)   pad every side with p zeros (black, before Normalize), then
                        the H x W window at (i, j) = (top, left) of the padded image
  RandomHorizontalFlip  x.flip(-1)
  adjust_brightness(f)  blend(x, 0, f)        blend(a, b, r) = (r a + (1 - r) b).clamp(0, 1)
  adjust_contrast(f)    blend(x, mean(gray(x)), f)   (gray(x) = x for one channel)
  adjust_saturation(f)  blend(x, gray(x), f)  gray = 0.2989 R + 0.587 G + 0.114 B
  affine translate (t)  out[.., x] = in[.., x - t], zero fill (integer shifts: no resampling)
  Normalize(mean, std)  (x - mean) / std
  Cutout(size) at (y, x)  the clipped square [y - size//2, y - size//2 + size) x (same in x) := 0
                          after Normalize
The C++ test feeds the same parameters to apply_transform and compares.
    /usr/bin/python3 tests/reference/gen_transforms.py
"""
import torch
import torch.nn.functional as F

from golden import case, write

g = torch.Generator().manual_seed(0)

CIFAR_MEAN = [0.4914, 0.4822, 0.4465]
CIFAR_STD = [0.2470, 0.2435, 0.2616]


def image(*shape):
    return torch.randint(0, 256, shape, generator=g, dtype=torch.int64).to(torch.uint8)


def gray(x):
    return 0.2989 * x[0] + 0.587 * x[1] + 0.114 * x[2]


def blend(a, b, r):
    return (r * a + (1.0 - r) * b).clamp(0.0, 1.0)


def translate(x, ty, tx):
    C, H, W = x.shape
    out = torch.zeros_like(x)
    for y in range(H):
        for xx in range(W):
            sy, sx = y - ty, xx - tx
            if 0 <= sy < H and 0 <= sx < W:
                out[:, y, xx] = x[:, sy, sx]
    return out


def augment(img, pad=0, top=0, left=0, flip=False, mean=None, std=None, strong=(), cutout=(0, 0, 0)):
    x = img.float().div(255)  # ToTensor
    C, H, W = x.shape
    if pad > 0:  # RandomCrop(H, padding=pad): zero padding, then the window at (top, left)
        x = F.pad(x, (pad, pad, pad, pad), value=0.0)[:, top:top + H, left:left + W]
    if flip:  # RandomHorizontalFlip
        x = x.flip(-1)
    for op, v in strong:
        if op == "brightness":
            x = blend(x, torch.zeros_like(x), v)
        elif op == "contrast":
            m = (gray(x) if C == 3 else x).mean()
            x = blend(x, m, v)
        elif op == "saturation":
            x = blend(x, gray(x).unsqueeze(0), v)
        elif op == "translate_x":
            x = translate(x, 0, int(v))
        elif op == "translate_y":
            x = translate(x, int(v), 0)
        elif op == "identity":
            pass
        else:
            raise ValueError(op)
    x = (x - torch.tensor(mean).view(-1, 1, 1)) / torch.tensor(std).view(-1, 1, 1)  # Normalize
    cy, cx, size = cutout
    if size > 0:
        y0, x0 = max(0, cy - size // 2), max(0, cx - size // 2)
        y1, x1 = min(H, cy - size // 2 + size), min(W, cx - size // 2 + size)
        x = x.clone()
        x[:, y0:y1, x0:x1] = 0.0
    return x


def aug_case(name, img, rtol=1e-6, atol=1e-6, **params):
    params.setdefault("mean", CIFAR_MEAN if img.shape[0] == 3 else [0.1307])
    params.setdefault("std", CIFAR_STD if img.shape[0] == 3 else [0.3081])
    p = dict(params)
    p["strong"] = [list(s) for s in params.get("strong", ())]
    p["cutout"] = list(params.get("cutout", (0, 0, 0)))
    return case(name, "augment", lambda x, **kw: augment(x, **params), [img], p, rtol=rtol, atol=atol, grad=False)


cases = [
    aug_case("normalize_only", image(3, 4, 5)),
    aug_case("normalize_gray", image(1, 3, 4)),
    aug_case("crop_identity", image(3, 6, 6), pad=4, top=4, left=4),
    aug_case("crop_top_left", image(3, 6, 6), pad=4, top=0, left=0),
    aug_case("crop_bottom_right", image(3, 6, 6), pad=4, top=8, left=8),
    aug_case("crop_mixed", image(3, 6, 7), pad=4, top=1, left=6),
    aug_case("crop_pad2_gray", image(1, 5, 6), pad=2, top=3, left=0),
    aug_case("crop_wider_than_image", image(3, 3, 3), pad=4, top=2, left=7),
    aug_case("flip_only", image(3, 4, 5), flip=True),
    aug_case("crop_then_flip", image(3, 6, 6), pad=4, top=2, left=7, flip=True),
    aug_case("crop_then_flip_gray", image(1, 6, 5), pad=3, top=5, left=1, flip=True),
    aug_case("brightness", image(3, 4, 4), strong=[("brightness", 1.6)], atol=1e-5),
    aug_case("darkness", image(3, 4, 4), strong=[("brightness", 0.3)], atol=1e-5),
    aug_case("contrast", image(3, 4, 5), strong=[("contrast", 1.7)], atol=1e-5),
    aug_case("contrast_gray", image(1, 4, 5), strong=[("contrast", 0.4)], atol=1e-5),
    aug_case("saturation", image(3, 4, 5), strong=[("saturation", 1.8)], atol=1e-5),
    aug_case("translate_x", image(3, 5, 6), strong=[("translate_x", 2.0)], atol=1e-5),
    aug_case("translate_y_neg", image(3, 5, 6), strong=[("translate_y", -3.0)], atol=1e-5),
    aug_case("cutout_inside", image(3, 8, 8), cutout=(4, 3, 4)),
    aug_case("cutout_corner", image(3, 8, 8), cutout=(0, 7, 4)),
    aug_case("full_pipeline", image(3, 8, 8), pad=4, top=6, left=1, flip=True,
             strong=[("saturation", 0.5), ("translate_x", -2.0), ("contrast", 1.3)], cutout=(2, 2, 3), atol=1e-5),
]

write("golden_transforms.json", cases)
