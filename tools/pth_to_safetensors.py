#!/usr/bin/env python3
"""Convert a PyTorch checkpoint (.pth / .pt) into a .safetensors file kdlab loads by name.

    /usr/bin/python3 tools/pth_to_safetensors.py teacher.pth teacher.safetensors

Accepts a plain state_dict, mdistiller / RepDistiller teachers ({"model": state_dict, ...}),
{"state_dict": ...} checkpoints and whole pickled modules; strips a "module." prefix left by
DataParallel. Needs only PyTorch (Debian: apt-get install python3-torch); the safetensors file
is written by hand following the format (8-byte little-endian header length, JSON header,
data), so the `safetensors` package is not required. The output is written atomically.
"""
import json
import os
import struct
import sys

import torch

DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
          torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
          torch.bool: "BOOL"}


def find_state_dict(obj):
    if isinstance(obj, torch.nn.Module):
        return obj.state_dict()
    if isinstance(obj, dict):
        for key in ("model", "state_dict", "model_state_dict", "net"):
            if key in obj and isinstance(obj[key], (dict, torch.nn.Module)):
                return find_state_dict(obj[key])
        if all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
    raise SystemExit("no state_dict found: expected a dict of tensors, {'model': ...}, {'state_dict': ...} or a module")


def write_safetensors(tensors, path, metadata=None):
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name, t in tensors.items():
        t = t.detach().cpu().contiguous()
        if t.dtype not in DTYPES:
            raise SystemExit(f"tensor {name}: dtype {t.dtype} is not supported by safetensors")
        data = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)  # pad the header to a multiple of 8, as the library does
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    src, dst = sys.argv[1], sys.argv[2]
    obj = torch.load(src, map_location="cpu")
    sd = find_state_dict(obj)
    sd = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}
    write_safetensors(sd, dst, {"converted_from": os.path.basename(src)})
    print(f"wrote {dst}: {len(sd)} tensors")


if __name__ == "__main__":
    main()
