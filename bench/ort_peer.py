#!/usr/bin/env python3
"""The peer that `smoothface bench` measures tract against, run in the same benchmark.

embed:  per-face embedding latencies of ONNX models in onnxruntime on one thread, on the exact
        input tensors the Rust side wrote (raw float32, [N, 3, S, S] or [N, S, S, 3]); prints the
        latencies and the embeddings so the caller can check both runtimes agree, and with
        --profile the time of each op type.
search: brute-force cosine search with numpy (matrix-vector product + argpartition) over random
        unit vectors, the same sizes the Rust side scans.
Prints one JSON object on stdout.
"""
import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np  # noqa: E402


def session(path, profile=False):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if profile:
        opts.enable_profiling = True
        opts.profile_file_prefix = os.path.join(tempfile.gettempdir(), "smoothface-ort-profile")
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def op_profile(s, x, name, runs=20):
    """Per-op-type time: the sum over nodes of each node's fastest run, in milliseconds."""
    for _ in range(runs):
        s.run(None, {name: x})
    path = s.end_profiling()
    with open(path) as f:
        events = json.load(f)
    os.remove(path)
    fastest = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            key = (e["args"]["op_name"], e["name"])
            fastest[key] = min(fastest.get(key, float("inf")), e["dur"] / 1e3)
    ops = {}
    for (op, _), ms in fastest.items():
        total, count = ops.get(op, (0.0, 0))
        ops[op] = (total + ms, count + 1)
    return [{"op": op, "ms": ms, "nodes": n} for op, (ms, n) in sorted(ops.items(), key=lambda kv: -kv[1][0])]


def embed(args):
    """Each model times every face once per repeat, one model after the other (as the Rust side
    does, which calls this once per round)."""
    import onnxruntime as ort

    sessions = [session(m) for m in args.model]
    names = [s.get_inputs()[0].name for s in sessions]
    data = np.fromfile(args.input, dtype=np.float32).reshape([args.n] + args.shape)
    outs = [[] for _ in sessions]
    for i in range(args.n):  # the first pass warms up and keeps the embeddings
        for k, (s, name) in enumerate(zip(sessions, names)):
            outs[k].append(s.run(None, {name: data[i : i + 1]})[0].reshape(-1))
    times = [[] for _ in sessions]
    for _ in range(args.repeat):
        for k, (s, name) in enumerate(zip(sessions, names)):
            for i in range(args.n):
                t = time.perf_counter()
                s.run(None, {name: data[i : i + 1]})
                times[k].append(1e3 * (time.perf_counter() - t))
    models = []
    for k, path in enumerate(args.model):
        out = np.stack(outs[k])
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        model = {"times_ms": times[k], "embeddings": out.tolist()}
        if args.profile:
            model["profile"] = op_profile(session(path, profile=True), data[0:1], names[k])
        models.append(model)
    json.dump({"runtime": "onnxruntime " + ort.__version__, "models": models}, sys.stdout)


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
    e.add_argument("--model", action="append", required=True, help="repeat for several models")
    e.add_argument("--input", required=True)
    e.add_argument("--n", type=int, required=True)
    e.add_argument("--shape", type=lambda s: [int(x) for x in s.split(",")], required=True)
    e.add_argument("--repeat", type=int, default=1)
    e.add_argument("--profile", action="store_true", help="also time each op type")
    s = sub.add_parser("search")
    s.add_argument("--dim", type=int, default=512)
    s.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], required=True)
    s.add_argument("--top", type=int, default=20)
    s.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    embed(args) if args.cmd == "embed" else search(args)


if __name__ == "__main__":
    main()
