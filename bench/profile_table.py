"""Sums the lines of `perf report --no-children --sort dso,symbol` into the ops they belong to.

Reads the report on stdin; prints the share of samples per op, then the top symbols. The rules
below map a symbol (a oneDNN JIT kernel named through ONEDNN_JIT_PROFILE=2, one of our kernels,
an OpenBLAS routine, ...) to an op; the first rule that matches wins.
"""
import argparse
import collections
import re
import sys

RULES = [  # (op, regular expression on "dso symbol")
    ("conv forward (oneDNN)", r"conv_fwd|1x1_conv_kernel|brgemm|brgconv|rtus_driver|conv_fwd_kernel"),
    ("conv backward data (oneDNN)", r"bwd_data"),
    ("conv backward weights (oneDNN)", r"bwd_weights|diff_bias|trans_src|trans_dst|tr_src|tr_diff_dst"),
    ("reorders NCHW <-> blocked (oneDNN)", r"reorder|single_blk"),
    ("im2col / col2im", r"im2col|col2im"),
    ("sgemm (OpenBLAS)", r"libopenblas"),
    ("batch norm (statistics, normalise, backward)", r"scale_shift|affine2|sum_sq_dev|dot_centered|batch_norm"),
    ("relu forward / backward", r"::relu"),
    ("gelu forward / backward", r"::gelu"),
    ("layer norm", r"layer_norm"),
    ("matmul / linear (oneDNN gemm, inner product)", r"gemm_f32|sgemm_kern|f32_copy_|inner_product"),
    ("elementwise (add, mul, axpy, ...) and sums", r"Simd<.*>::(add|sub|mul|axpy|sum|rsub)|map_binary|map_unary"),
    ("SGD update", r"SGD::update"),
    ("loss, softmax, linear", r"softmax|cross_entropy|nll|linear|matmul"),
    ("page faults and other kernel time", r"\[kernel|\[k\]"),
    ("OpenMP runtime (barriers, spinning)", r"libgomp|libomp"),
    ("malloc / free", r"malloc|free|libc\.so"),
    ("start-up (random init, model build)", r"normal|uniform|mersenne|cos_fma|log_fma|ld-linux|Generator"),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--symbols", type=int, default=25)
    args = ap.parse_args()
    shares = collections.defaultdict(float)
    symbols = collections.defaultdict(float)
    for line in sys.stdin:
        m = re.match(r"\s+([\d.]+)%\s+(.+?)\s+\[(.)\]\s+(.*)", line)
        if not m:
            continue
        pct, dso, kind, sym = float(m.group(1)), m.group(2), m.group(3), m.group(4).strip()
        sym = re.sub(r"kd::kernels::\(anonymous namespace\)::Simd<kd::kernels::\(anonymous namespace\)::(\w+)>::",
                     r"Simd<\1>::", sym)
        key = f"{dso} [{kind}] {sym}"
        op = next((name for name, rx in RULES if re.search(rx, key)), "other")
        shares[op] += pct
        symbols[(op, f"{dso}  {sym[:90]}")] += pct
    print("\nshare of samples by op")
    for op, pct in sorted(shares.items(), key=lambda kv: -kv[1]):
        print(f"  {pct:6.2f}%  {op}")
    print(f"\ntop {args.symbols} symbols")
    for (op, sym), pct in sorted(symbols.items(), key=lambda kv: -kv[1])[: args.symbols]:
        print(f"  {pct:6.2f}%  {sym}   <- {op}")


if __name__ == "__main__":
    main()
