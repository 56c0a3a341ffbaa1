"""Fixtures for the .npy reader (engine/npy.cpp): tests/fixtures/npy/*.npy, written by NumPy.

The values are simple closed forms (arange-based) that tests/test_npy.cpp recomputes.
Run: /usr/bin/python3 tests/reference/gen_npy.py
"""
import os

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "npy")
os.makedirs(OUT, exist_ok=True)


def path(name):
    return os.path.join(OUT, name)


def save(name, arr):
    np.save(path(name), arr)


# supported dtypes
save("f4.npy", (np.arange(6, dtype=np.float32).reshape(2, 3) * 0.5 - 1.0))
save("f8.npy", np.array([0.1, -2.5, 1e10], dtype=np.float64))
save("i8.npy", np.array([[0, -1], [2**40, -(2**40)]], dtype=np.int64))
save("i4.npy", np.array([7, -3, 2**31 - 1, -(2**31)], dtype=np.int32))
save("u1.npy", np.array([[0, 1, 255], [128, 7, 42]], dtype=np.uint8))
save("b1.npy", np.array([True, False, True, True, False]))
save("scalar0d.npy", np.array(3.25, dtype=np.float32))
save("empty.npy", np.zeros((0, 3), dtype=np.float32))
save("f4_3d.npy", np.arange(24, dtype=np.float32).reshape(2, 3, 4))

# format versions 2.0 and 3.0 (4-byte header length)
for major in (2, 3):
    with open(path(f"v{major}.npy"), "wb") as f:
        np.lib.format.write_array(f, np.arange(5, dtype=np.float32), version=(major, 0))

# files the reader must reject
save("big_endian.npy", np.arange(4, dtype=">f4"))
save("fortran.npy", np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)))
save("complex.npy", np.zeros(3, dtype=np.complex64))
with open(path("f4_3d.npy"), "rb") as f:
    whole = f.read()
with open(path("truncated.npy"), "wb") as f:
    f.write(whole[:-10])  # the data stops 10 bytes short
with open(path("bad_magic.npy"), "wb") as f:
    f.write(b"\x93NUMPZ" + whole[6:])

for name in sorted(os.listdir(OUT)):
    print(f"wrote {os.path.join(OUT, name)}: {os.path.getsize(path(name))} bytes")
