#!/usr/bin/env python3
"""The peer that `smoothface bench` measures tract against, run in the same benchmark.

embed:  per-face embedding latency of an ONNX model in onnxruntime on one thread, on the exact
        input tensors the Rust side wrote (raw float32, [N, 3, S, S] or [N, S, S, 3]); prints the
        latency and the embeddings so the caller can check both runtimes agree.
search: brute-force cosine search with numpy (matrix-vector product + argpartition) over random
        unit vectors, the same sizes the Rust side scans.
Prints one JSON object on stdout.
"""
import argparse
import json
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np  # noqa: E402


def embed(args):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(args.model, opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    data = np.fromfile(args.input, dtype=np.float32).reshape([args.n] + args.shape)
    out = [session.run(None, {name: data[i : i + 1]})[0].reshape(-1) for i in range(args.n)]  # warm-up
    times = []
    for _ in range(args.repeat):
        for i in range(args.n):
            t = time.perf_counter()
            session.run(None, {name: data[i : i + 1]})
            times.append(time.perf_counter() - t)
    times.sort()
    out = np.stack(out)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    json.dump(
        {
            "runtime": "onnxruntime " + ort.__version__,
            "median_ms": 1e3 * times[len(times) // 2],
            "mean_ms": 1e3 * sum(times) / len(times),
            "embeddings": out.tolist(),
        },
        sys.stdout,
    )


def search(args):
    rng = np.random.default_rng(0)
    results = []
    for n in args.sizes:
        m = rng.standard_normal((n, args.dim), dtype=np.float32)
        m /= np.linalg.norm(m, axis=1, keepdims=True)
        q = m[0].copy()
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            s = m @ q
            top = np.argpartition(-s, args.top)[: args.top]
            top = top[np.argsort(-s[top])]
            times.append(time.perf_counter() - t)
        times.sort()
        results.append({"vectors": n, "median_ms": 1e3 * times[len(times) // 2]})
        del m
    json.dump({"runtime": "numpy " + np.__version__, "search": results}, sys.stdout)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("embed")
    e.add_argument("--model", required=True)
    e.add_argument("--input", required=True)
    e.add_argument("--n", type=int, required=True)
    e.add_argument("--shape", type=lambda s: [int(x) for x in s.split(",")], required=True)
    e.add_argument("--repeat", type=int, default=3)
    s = sub.add_parser("search")
    s.add_argument("--dim", type=int, default=512)
    s.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], required=True)
    s.add_argument("--top", type=int, default=20)
    s.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    embed(args) if args.cmd == "embed" else search(args)


if __name__ == "__main__":
    main()
