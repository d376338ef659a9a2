#!/usr/bin/env python3
"""PyTorch peers of bench_gpu's parts 2 and 3, on the same GPU, f16.

  2. the ResNet-50 convolution layers (conv + bias + relu) at batch 1 and 32: F.conv2d, which is
     cuDNN (torch.backends.cudnn.benchmark on), in NCHW and in channels-last; the faster counts.
  3. ResNet-50 (batch norm folded into the convolutions, as examples/models.hpp builds it) and
     BERT-base (12 layers, sequence 128), batch 1: PyTorch eager, torch.compile, and
     torch.compile(mode="reduce-overhead"), which replays the model's kernels as a CUDA graph
     (as loom's runs on the same buffers do).
And of part 1's f16 BERT-base matmuls with their epilogues (F.linear with the bias, then GELU or
the residual): eager and torch.compile (without --quick).

Against bench_gpu's JSON files (--loom takes several: the models' and the matmuls'), loom's
faster layout counts: a conv record's loom_ms is the faster of
its NCHW and NHWC kernels, and ResNet-50 is also compiled NHWC ("resnet50_nhwc").

Times are CUDA-event milliseconds per call, the median of rounds after a warm-up. With --loom
(bench_gpu's JSON) it prints peer / loom ratios (above 1: loom is faster). Without a GPU or
PyTorch it says so and exits 0.

  python3 bench/gpu_torch_peers.py [--loom bench_gpu.json ...] [--json OUT] [--quick] [--no-compile]
"""

import argparse
import json
import math
import statistics
import sys

RESNET_LAYERS = [  # input channels, size, output channels, kernel, stride (bench_gpu's list)
    (64, 56, 64, 3, 1), (64, 56, 256, 1, 1), (256, 56, 64, 1, 1), (128, 28, 128, 3, 1),
    (256, 14, 256, 3, 1), (512, 7, 512, 3, 1), (3, 224, 64, 7, 2)]


BERT_EPILOGUES = [  # bench_gpu's names: m, n, k, then GELU, residual
    ("qkv 128x2304x768 +bias", 128, 2304, 768, False, False),
    ("attn_out 128x768x768 +bias+res", 128, 768, 768, False, True),
    ("ffn1 128x3072x768 +bias+gelu", 128, 3072, 768, True, False),
    ("ffn2 128x768x3072 +bias+res", 128, 768, 3072, False, True)]


def conv_name(batch, c, hw, o, k, s):
    return f"conv_b{batch}_{c}x{hw}x{hw}_{o}_k{k}s{s}"


def time_ms(torch, fn, rounds=7, calls=10):
    """Median over rounds of the CUDA-event time of `calls` calls, per call."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(rounds):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / calls)
    return statistics.median(times)


def build_models(torch):
    nn, F = torch.nn, torch.nn.functional

    class Bottleneck(nn.Module):
        def __init__(self, cin, width, stride):
            super().__init__()
            self.c1 = nn.Conv2d(cin, width, 1)
            self.c2 = nn.Conv2d(width, width, 3, stride, 1)
            self.c3 = nn.Conv2d(width, 4 * width, 1)
            self.shortcut = nn.Conv2d(cin, 4 * width, 1, stride) if stride != 1 or cin != 4 * width else None

        def forward(self, x):
            y = self.c3(F.relu(self.c2(F.relu(self.c1(x)))))
            return F.relu(y + (self.shortcut(x) if self.shortcut is not None else x))

    class ResNet50(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 64, 7, 2, 3)
            blocks, cin, width = [], 64, 64
            for stage, count in enumerate([3, 4, 6, 3]):
                for b in range(count):
                    blocks.append(Bottleneck(cin, width, 2 if stage > 0 and b == 0 else 1))
                    cin = 4 * width
                width *= 2
            self.blocks = nn.Sequential(*blocks)
            self.fc = nn.Linear(cin, 1000)

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.stem(x)), 3, 2, 1)
            return self.fc(self.blocks(x).mean((2, 3)))

    class BertLayer(nn.Module):
        def __init__(self, hidden=768, heads=12, ffn=3072):
            super().__init__()
            self.heads = heads
            self.q, self.k, self.v = (nn.Linear(hidden, hidden) for _ in range(3))
            self.out = nn.Linear(hidden, hidden)
            self.norm1, self.norm2 = nn.LayerNorm(hidden, eps=1e-12), nn.LayerNorm(hidden, eps=1e-12)
            self.ffn1, self.ffn2 = nn.Linear(hidden, ffn), nn.Linear(ffn, hidden)

        def forward(self, x, mask):
            b, s, h = x.shape
            d = h // self.heads
            q = self.q(x).view(b, s, self.heads, d).transpose(1, 2)
            k = self.k(x).view(b, s, self.heads, d).permute(0, 2, 3, 1)
            v = self.v(x).view(b, s, self.heads, d).transpose(1, 2)
            probs = torch.softmax(q @ k * (1.0 / math.sqrt(d)) + mask, -1)
            context = (probs @ v).transpose(1, 2).reshape(b, s, h)
            x = self.norm1(x + self.out(context))
            return self.norm2(x + self.ffn2(F.gelu(self.ffn1(x))))

    class Bert(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList(BertLayer() for _ in range(12))

        def forward(self, x, mask):
            for layer in self.layers:
                x = layer(x, mask)
            return x

    return ResNet50, Bert


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loom", nargs="+", default=[], help="bench_gpu's JSON files, for the ratios")
    parser.add_argument("--json", help="write the peers' records here")
    parser.add_argument("--quick", action="store_true", help="batch 1 only")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    args = parser.parse_args()
    try:
        import torch
    except ImportError:
        print("gpu_torch_peers: PyTorch is not installed; nothing to time")
        return 0
    if not torch.cuda.is_available():
        print("gpu_torch_peers: no GPU for PyTorch; nothing to time")
        return 0
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev, f16 = torch.device("cuda"), torch.float16
    print(f"device {torch.cuda.get_device_name(0)}, PyTorch {torch.__version__}, "
          f"cuDNN {torch.backends.cudnn.version()}")
    records = []

    print(f"\n{'conv2d f16 (+bias, relu)':34} {'nchw ms':>10} {'nhwc ms':>10}")
    F = torch.nn.functional
    with torch.inference_mode():
        for batch in ([1] if args.quick else [1, 32]):
            for c, hw, o, k, s in RESNET_LAYERS:
                x = torch.randn(batch, c, hw, hw, device=dev, dtype=f16)
                w = torch.randn(o, c, k, k, device=dev, dtype=f16) * 0.1
                b = torch.randn(o, device=dev, dtype=f16) * 0.05
                nchw = time_ms(torch, lambda: F.relu(F.conv2d(x, w, b, s, k // 2)))
                xl = x.to(memory_format=torch.channels_last)
                wl = w.to(memory_format=torch.channels_last)
                nhwc = time_ms(torch, lambda: F.relu(F.conv2d(xl, wl, b, s, k // 2)))
                name = conv_name(batch, c, hw, o, k, s)
                print(f"{name:34} {nchw:10.4f} {nhwc:10.4f}")
                records.append({"name": name, "op": "conv2d", "peer": "cudnn",
                                "peer_ms": min(nchw, nhwc), "nchw_ms": nchw, "nhwc_ms": nhwc})

        if not args.quick:
            print(f"\n{'f16 matmul + epilogue (BERT-base)':34} {'eager ms':>10} {'compile ms':>10}")
            for name, m, n, k, gelu, residual in BERT_EPILOGUES:
                x = torch.randn(m, k, device=dev, dtype=f16)
                w = torch.randn(n, k, device=dev, dtype=f16) * 0.05
                b = torch.randn(n, device=dev, dtype=f16) * 0.05
                r = torch.randn(m, n, device=dev, dtype=f16)

                def layer(x, w, b, r, gelu=gelu, residual=residual):
                    y = F.linear(x, w, b)
                    if gelu:
                        y = F.gelu(y)
                    return y + r if residual else y

                eager = time_ms(torch, lambda: layer(x, w, b, r))
                records.append({"name": name, "op": "gemm_epilogue", "peer": "torch_eager",
                                "peer_ms": eager})
                compiled_ms = float("nan")
                if not args.no_compile:
                    try:
                        compiled = torch.compile(layer)
                        compiled_ms = time_ms(torch, lambda: compiled(x, w, b, r))
                        records.append({"name": name, "op": "gemm_epilogue",
                                        "peer": "torch_compile", "peer_ms": compiled_ms})
                    except Exception as e:  # no Triton, no compiler: say so, keep the rest
                        print(f"torch.compile of {name} failed: {type(e).__name__}: {e}"[:400])
                print(f"{name:34} {eager:10.4f} {compiled_ms:10.4f}")

        ResNet50, Bert = build_models(torch)
        print(f"\n{'model f16, batch 1':34} {'eager ms':>10} {'compile ms':>10} {'compile s':>10} "
              f"{'graphs ms':>10}")
        for name, make, shape in (("resnet50", ResNet50, (1, 3, 224, 224)),
                                  ("bert_base_seq128", Bert, (1, 128, 768))):
            model = make().to(dev, f16).eval()
            x = torch.randn(*shape, device=dev, dtype=f16)
            args_in = (x,)
            if name.startswith("bert"):  # bench_gpu's mask: the last 16 of 128 tokens padding
                mask = torch.zeros(1, 1, 1, 128, device=dev, dtype=f16)
                mask[..., 112:] = -10000.0
                args_in = (x, mask)
            eager = time_ms(torch, lambda: model(*args_in))
            records.append({"name": name, "op": "model", "peer": "torch_eager", "peer_ms": eager})
            compiled_ms, compile_s = float("nan"), float("nan")
            if not args.no_compile:
                try:
                    import time
                    t0 = time.time()
                    compiled = torch.compile(model)
                    compiled(*args_in)
                    torch.cuda.synchronize()
                    compile_s = time.time() - t0
                    compiled_ms = time_ms(torch, lambda: compiled(*args_in))
                    records.append({"name": name, "op": "model", "peer": "torch_compile",
                                    "peer_ms": compiled_ms, "compile_s": compile_s})
                except Exception as e:  # no Triton, no compiler: say so, keep the rest
                    print(f"torch.compile of {name} failed: {type(e).__name__}: {e}"[:400])
            graphs_ms = float("nan")
            if not args.no_compile:
                try:  # the same, its kernels replayed as a CUDA graph
                    graphed = torch.compile(model, mode="reduce-overhead")
                    for _ in range(3):  # recorded on the first calls, then replayed
                        graphed(*args_in)
                    torch.cuda.synchronize()
                    graphs_ms = time_ms(torch, lambda: graphed(*args_in))
                    records.append({"name": name, "op": "model",
                                    "peer": "torch_compile_cudagraphs", "peer_ms": graphs_ms})
                except Exception as e:
                    print(f"torch.compile (reduce-overhead) of {name} failed: "
                          f"{type(e).__name__}: {e}"[:400])
            print(f"{name:34} {eager:10.3f} {compiled_ms:10.3f} {compile_s:10.1f} {graphs_ms:10.3f}")

    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=1)
    if args.loom:
        loom = {}
        for path in args.loom:
            with open(path) as f:
                loom.update({r["name"]: r for r in json.load(f) if "loom_ms" in r})
        print(f"\n{'peer / loom (above 1: loom faster)':40} {'peer':>14} {'ratio':>8}")
        logs = {}
        for r in records:
            # A model also compiled with channels_last() fixed ("<name>_nhwc"): the faster counts.
            mine = [loom[n]["loom_ms"] for n in (r["name"], r["name"] + "_nhwc") if n in loom]
            if not mine or not r["peer_ms"] or math.isnan(r["peer_ms"]):
                continue
            ratio = r["peer_ms"] / min(mine)
            logs.setdefault(r["peer"], []).append(math.log(ratio))
            print(f"{r['name']:40} {r['peer']:>14} {ratio:8.3f}")
        for peer, values in logs.items():
            print(f"geometric mean {peer} / loom: {math.exp(sum(values) / len(values)):.3f} "
                  f"({len(values)} cases)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
