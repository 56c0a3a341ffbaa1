"""safetensors fixtures written as the Python library writes them (tests/test_safetensors.cpp).

Debian has no python3-safetensors package, so this script carries a small writer that follows
the format specification (https://github.com/huggingface/safetensors, "Format") and the
library's layout choices:
  * tensors are laid out sorted by dtype, largest first in the library's Dtype order, then by
    name (safetensors' `prepare`), and the header lists them in that order;
  * "__metadata__" comes first in the header;
  * the header is compact JSON (no spaces), padded with spaces to a multiple of 8 bytes;
  * data is little-endian, C order.
The F16 and BF16 bytes come from torch's own conversions (`.half()`, `.bfloat16()`).

Writes tests/fixtures/safetensors/{all_dtypes,empty}.safetensors and expected.json (the values
kdlab must read, already converted to float32 / int64 / uint8). Run with Debian's python3-torch:
    /usr/bin/python3 tests/reference/gen_safetensors.py
"""
import json
import os
import struct

import numpy as np
import torch

from golden import FIXTURES, tensor_json

OUT = os.path.join(FIXTURES, "safetensors")

# The library's Dtype enum order (safetensors/src/tensor.rs); layout sorts by it, descending.
DTYPE_ORDER = ["BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "F64",
               "I64", "U64"]


def tensor_bytes(t):
    """(safetensors dtype, little-endian C-order bytes) of a torch tensor."""
    t = t.contiguous()
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16: take the raw 16-bit patterns
        return "BF16", t.view(torch.int16).numpy().astype("<i2").tobytes()
    name, np_dtype = {
        torch.float32: ("F32", "<f4"), torch.float16: ("F16", "<f2"), torch.float64: ("F64", "<f8"),
        torch.int64: ("I64", "<i8"), torch.int32: ("I32", "<i4"), torch.int16: ("I16", "<i2"),
        torch.int8: ("I8", "i1"), torch.uint8: ("U8", "u1"), torch.bool: ("BOOL", "?"),
    }[t.dtype]
    return name, t.numpy().astype(np_dtype).tobytes()


def serialize(tensors, metadata=None):
    items = [(name,) + tensor_bytes(t) + (list(t.shape),) for name, t in tensors.items()]
    items.sort(key=lambda it: (-DTYPE_ORDER.index(it[1]), it[0]))
    header = {}
    if metadata:
        header["__metadata__"] = metadata
    offset = 0
    for name, dtype, data, shape in items:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(it[2] for it in items)


def main():
    os.makedirs(OUT, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    special = torch.tensor([0.0, -0.0, 1.0, -2.5, 65504.0, 6e-8, 1e-5, float("inf"), float("-inf"), float("nan"),
                            0.1, 3.14159])
    tensors = {
        "f32.weight": torch.randn(2, 3, 4, generator=g),
        "f16.values": special.half(),
        "f16.random": torch.randn(3, 5, generator=g).half(),
        "bf16.values": special.bfloat16(),
        "bf16.random": torch.randn(7, generator=g).bfloat16(),
        "f64.values": torch.tensor([1.0 / 3.0, -1e300, 2.0 ** -140, 123456.789], dtype=torch.float64),
        "i64.values": torch.tensor([[0, -1, 2 ** 62], [7, -(2 ** 40), 5]], dtype=torch.int64),
        "i32.values": torch.tensor([0, -1, 2 ** 31 - 1, -(2 ** 31)], dtype=torch.int32),
        "i16.values": torch.tensor([0, -1, 32767, -32768, 12], dtype=torch.int16),
        "i8.values": torch.tensor([0, -1, 127, -128], dtype=torch.int8),
        "u8.values": torch.tensor([0, 1, 128, 255], dtype=torch.uint8),
        "bool.mask": torch.tensor([[True, False, True], [False, False, True]]),
        "scalar": torch.tensor(2.5),                       # 0-d
        "bn.num_batches_tracked": torch.tensor(391),       # 0-d int64, as in PyTorch BN
        "empty": torch.zeros(0, 3),                        # no elements: data_offsets [x, x]
    }
    metadata = {"format": "pt", "source": "tests/reference/gen_safetensors.py"}
    with open(os.path.join(OUT, "all_dtypes.safetensors"), "wb") as f:
        f.write(serialize(tensors, metadata))
    with open(os.path.join(OUT, "empty.safetensors"), "wb") as f:
        f.write(serialize({}))

    def expected(t):
        if t.dtype in (torch.float16, torch.bfloat16, torch.float64):
            t = t.float()
        elif t.dtype in (torch.int32, torch.int16, torch.int8):
            t = t.long()
        return tensor_json(t)

    order = [it for it in sorted(tensors, key=lambda n: (-DTYPE_ORDER.index(tensor_bytes(tensors[n])[0]), n))]
    doc = {
        "generator": "tests/reference/gen_safetensors.py",
        "torch": torch.__version__,
        "metadata": metadata,
        "order": order,
        "tensors": {n: expected(t) for n, t in tensors.items()},
    }
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(doc, f, indent=1)
    print(f"wrote {OUT}: {len(tensors)} tensors")


if __name__ == "__main__":
    main()
