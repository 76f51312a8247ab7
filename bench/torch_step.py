"""The peer of `smoothface-train bench-step`: the same training step in PyTorch.

Builds MobileFaceNet (mobilefacenet or mbf) or IResNet-50 with the parameter names of the
trainer's var store, loads
the weights and the batch that bench-step wrote (safetensors), and times forward + Smooth-AP
(paper mode, in float32) + backward + torch.optim.Adam, after one warm-up step, exactly as the
trainer's child does. Prints one JSON object: seconds_per_step, images_per_second, first_loss,
steps, peak_bytes.

Run by bench-step from .venv-torch (the very torch wheel the trainer links), for example:
  .venv-torch/bin/python bench/torch_step.py --input DIR --arch mobilefacenet --threads 2
"""

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn


class ConvPRelu(nn.Module):
    def __init__(self, cin, cout, k, stride, groups=1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=True)
        self.prelu = nn.PReLU(cout)

    def forward(self, x):
        return self.prelu(self.conv(x))


class Bottleneck(nn.Module):
    def __init__(self, cin, expanded, cout, stride):
        super().__init__()
        self.expand = ConvPRelu(cin, expanded, 1, 1)
        self.dw = ConvPRelu(expanded, expanded, 3, stride, groups=expanded)
        self.project = nn.Conv2d(expanded, cout, 1, 1, 0, bias=True)
        self.residual = cin == cout and stride == 1

    def forward(self, x):
        y = self.project(self.dw(self.expand(x)))
        return y + x if self.residual else y


def stages(width, blocks):
    """name, blocks, in, expanded, out, first stride: mobilefacenet.rs's stages()."""
    narrow, wide = 64 * width, 128 * width
    return [
        ("conv_23", 1, narrow, 128, narrow, 2),
        ("conv_3", blocks[0], narrow, 128, narrow, 1),
        ("conv_34", 1, narrow, 256, wide, 2),
        ("conv_4", blocks[1], wide, 256, wide, 1),
        ("conv_45", 1, wide, 512, wide, 2),
        ("conv_5", blocks[2], wide, 256, wide, 1),
    ]


class MobileFaceNet(nn.Module):
    """mobilefacenet.rs's Variant: width 1 with the global depthwise head (mobilefacenet) or
    width 2 with the flattened fully connected head (mbf)."""

    def __init__(self, width=1, blocks=(4, 6, 2), flatten_head=False):
        super().__init__()
        stem = 64 * width
        self.conv1 = ConvPRelu(3, stem, 3, 2)
        self.conv2_dw = ConvPRelu(stem, stem, 3, 1, groups=64)
        self.order = []
        for name, count, cin, expanded, cout, stride in stages(width, blocks):
            stage = [
                Bottleneck(cin if i == 0 else cout, expanded, cout, stride if i == 0 else 1)
                for i in range(count)
            ]
            setattr(self, name, stage[0] if count == 1 else nn.Sequential(*stage))
            self.order.append(name)
        self.conv_6_sep = ConvPRelu(128 * width, 512, 1, 1)
        self.flatten_head = flatten_head
        if flatten_head:
            self.reduce = ConvPRelu(512, 64, 1, 1)
            self.fc = nn.Linear(64 * 7 * 7, 512)
        else:
            self.conv_6_dw = nn.Conv2d(512, 512, 7, 1, 0, groups=512, bias=True)
            self.embedding = nn.Conv2d(512, 512, 1, 1, 0, bias=True)

    def forward(self, x):
        x = self.conv2_dw(self.conv1(x))
        for name in self.order:
            x = getattr(self, name)(x)
        x = self.conv_6_sep(x)
        if self.flatten_head:
            return self.fc(self.reduce(x).flatten(1))
        return self.embedding(self.conv_6_dw(x)).flatten(1)


class IBasicBlock(nn.Module):
    def __init__(self, inplanes, planes, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-5)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-5)
        self.prelu = nn.PReLU(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-5)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes, eps=1e-5)
            )

    def forward(self, x):
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (self.downsample(x) if self.downsample is not None else x)


class IResNet50(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        inplanes = 64
        for stage, (count, planes) in enumerate(zip([3, 4, 14, 3], [64, 128, 256, 512])):
            blocks = []
            for i in range(count):
                blocks.append(IBasicBlock(inplanes, planes, 2 if i == 0 else 1))
                inplanes = planes
            setattr(self, f"layer{stage + 1}", nn.Sequential(*blocks))
        self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
        self.fc = nn.Linear(512 * 7 * 7, 512)
        self.features = nn.BatchNorm1d(512, eps=1e-5)
        self.features.weight.requires_grad = False

    def forward(self, x):
        x = self.prelu(self.bn1(self.conv1(x)))
        for stage in range(4):
            x = getattr(self, f"layer{stage + 1}")(x)
        return self.features(self.fc(self.bn2(x).flatten(1)))


def smooth_ap(embeddings, labels, tau):
    """Smooth-AP, the paper's sets (trainer/src/loss/smooth_ap.rs), in the authors' [B,B,B] form."""
    x = F.normalize(embeddings, dim=1)
    s = x @ x.T
    b = s.shape[0]
    eye = torch.eye(b, dtype=torch.bool, device=s.device)
    positive = (labels[:, None] == labels[None, :]) & ~eye  # P_q: q's label, q left out
    retrieval = ~eye  # Ω_q: the batch without q
    # sig[q, i, j] = σ((s_qj - s_qi) / τ); j = i is never counted.
    sig = torch.sigmoid((s[:, None, :] - s[:, :, None]) / tau) * ~eye[None]
    rank_all = 1 + (sig * retrieval[:, None, :]).sum(-1)
    rank_pos = 1 + (sig * positive[:, None, :]).sum(-1)
    count = positive.sum(-1)
    ap = (rank_pos / rank_all * positive).sum(-1) / count.clamp(min=1)
    return 1 - ap[count > 0].mean()


def peak_bytes():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--input", required=True, help="folder with weights.safetensors and batch.safetensors")
    ap.add_argument("--arch", choices=["mobilefacenet", "mbf", "iresnet50"], required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--precision", choices=["f32", "bf16", "f16"], default="f32")
    ap.add_argument("--steps", type=int, default=3, help="timed steps after the warm-up step")
    ap.add_argument("--max-seconds", type=float, default=60.0, help="stop timing after this long (one step at least)")
    ap.add_argument("--lr", type=float, required=True)
    ap.add_argument("--weight-decay", type=float, required=True)
    ap.add_argument("--tau", type=float, required=True)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = {
        "mobilefacenet": lambda: MobileFaceNet(),
        "mbf": lambda: MobileFaceNet(width=2, flatten_head=True),
        "iresnet50": lambda: IResNet50(),
    }[args.arch]()
    prefix = args.arch + "."
    weights = {k[len(prefix):]: v for k, v in load_file(f"{args.input}/weights.safetensors").items()}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise SystemExit(f"torch_step.py: the weights do not fit the model: missing {missing}, unexpected {unexpected}")
    model.to(device).train()
    batch = load_file(f"{args.input}/batch.safetensors")
    images, labels = batch["input"].to(device), batch["labels"].to(device)

    adam = torch.optim.Adam(
        [p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=args.weight_decay
    )
    low = {"bf16": torch.bfloat16, "f16": torch.float16}.get(args.precision)
    scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "f16")

    def step():
        with torch.autocast(device.type, dtype=low or torch.float32, enabled=low is not None):
            embeddings = model(images)
        loss = smooth_ap(embeddings.float(), labels, args.tau)
        adam.zero_grad(set_to_none=False)
        scaler.scale(loss).backward()
        scaler.step(adam)
        scaler.update()
        value = loss.item()  # waits for the device, as the trainer's step does
        return value

    first_loss = step()
    times = []
    started = time.perf_counter()
    while len(times) < max(args.steps, 1):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - started > args.max_seconds:
            break
    seconds = statistics.median(times)
    print(
        json.dumps(
            {
                "seconds_per_step": seconds,
                "images_per_second": images.shape[0] / seconds,
                "first_loss": first_loss,
                "steps": len(times),
                "peak_bytes": peak_bytes(),
            }
        )
    )


if __name__ == "__main__":
    main()
