"""Offline scoring throughput: batched ``Scorer.score_series`` vs one window at a time, vs the CPU's matmul rate.

What it measures, all in one run on the same threads:

- ``matmul``: a plain float32 2048x2048 @ 2048x2048 product repeated (torch), the machine's
  practical GFLOP/s limit for dense work;
- for the default model (8 channels, window 32, ``ModelConfig`` built exactly as ``train_bundle``
  builds it: ``default_latent``, ``default_depth``, hidden 32, and a linear path of rank 2) and a
  larger one (hidden 64, window 64): windows/s of ``Scorer.score_series`` over a long series at
  batch sizes 256 ... 16384, of the bare ``model(x)`` forward on a ready batch (the network alone,
  no standardize/copy/error), and of a naive loop calling the model on one window per call. GFLOP/s = windows/s x
  ``flops_per_window``; "% mm" is that against the matmul rate;
- a ``torch.profiler`` breakdown of the default model's forward at batch 4096 (conv vs
  conv_transpose vs linear vs copies), and prototypes of faster forms of the same network
  (identical outputs, checked): ``torch.jit`` trace + freeze + ``optimize_for_inference``, and
  ``matmul-form``, the same convolutions written as channels-last GEMMs (a stride-2 kernel-4
  conv is one GEMM over pairs of time steps plus a shifted add; the transposed conv the mirror).

Why: scoring is batched precisely because the autoencoder is tiny and per-call overhead dominates;
this shows how much batching buys and how close the network gets to what the CPU can do. The
issue's aim: the default model above 50% of the matmul rate. Run ``python bench/scoring.py``
(``--quick`` for fewer windows). Prints tables; asserts nothing (timings vary between runs).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sensorguard.service.bundle import Bundle  # noqa: E402
from sensorguard.service.model import ConvAutoencoder, ModelConfig, default_depth, default_latent, flops_per_window  # noqa: E402
from sensorguard.service.scorer import Scorer  # noqa: E402

BATCHES = (256, 1024, 4096, 16384)


def best_time(fn, repeats: int) -> float:
    """Fastest of ``repeats`` calls after one warm-up call (seconds)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def matmul_gflops(n: int = 2048, reps: int = 8) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)

    def run() -> None:
        for _ in range(reps):
            torch.mm(a, b, out=out)

    return 2 * n**3 * reps / best_time(run, 3) / 1e9


LINEAR_RANK = 2  # the linear path's rank: Kaiser's rule gives 1-3 on 8 simulated channels, 2 on most


def make_config(channels: int, window: int, hidden: int, linear: int = LINEAR_RANK) -> ModelConfig:
    """As ``train_bundle`` builds it from the data's channels and the chosen window, with the
    per-sample linear path every bundle trained on two or more varying channels has."""
    return ModelConfig(
        channels=channels,
        window=window,
        latent=default_latent(channels, window),
        hidden=hidden,
        depth=default_depth(window),
        linear=linear,
    )


def make_bundle(config: ModelConfig) -> Bundle:
    torch.manual_seed(0)
    net = ConvAutoencoder(config)
    return Bundle(
        channels=tuple(f"ch{i}" for i in range(config.channels)),
        config=config,
        hop=1,
        center_=np.zeros(config.channels),
        scale_=np.ones(config.channels),
        threshold_=1.0,
        state_dict=net.state_dict(),
    )


# --- prototype: the same network as channels-last GEMMs --------------------------------------------


class MatmulForm(nn.Module):
    """``ConvAutoencoder`` rewritten with activations ``(B, L, C)`` and every layer as a GEMM.

    Conv1d(k=4, s=2, p=1): pad one step each side, view pairs of time steps as ``(B, L/2+1, 2C)``,
    one GEMM against ``[W_k0k1 | W_k2k3]`` and add the two halves shifted by one pair.
    ConvTranspose1d(k=4, s=2, p=1): one GEMM to ``(B, L, 4, Cout)`` and two shifted adds.
    Takes input ``(B, W, C)`` (the series' natural layout) and returns the same layout.
    """

    def __init__(self, net: ConvAutoencoder) -> None:
        super().__init__()
        self.enc = []
        for layer in net.encoder:
            if isinstance(layer, nn.Conv1d):
                w = layer.weight.detach()  # (out, in, 4)
                w01 = w[:, :, :2].permute(2, 1, 0).reshape(2 * w.shape[1], w.shape[0])  # rows: (k, in)
                w23 = w[:, :, 2:].permute(2, 1, 0).reshape(2 * w.shape[1], w.shape[0])
                self.enc.append((torch.cat([w01, w23], dim=1).contiguous(), layer.bias.detach().clone()))
        inner_c, inner_l = net._inner
        lat = net.to_latent
        self.to_w = lat.weight.detach().view(-1, inner_c, inner_l).permute(0, 2, 1).reshape(lat.out_features, -1).T
        self.to_w, self.to_b = self.to_w.contiguous(), lat.bias.detach().clone()
        fl = net.from_latent[0]
        self.from_w = fl.weight.detach().view(inner_c, inner_l, -1).permute(1, 0, 2).reshape(-1, fl.in_features)
        self.from_w = self.from_w.T.contiguous()
        self.from_b = fl.bias.detach().view(inner_c, inner_l).T.reshape(-1).clone()
        self.inner = (inner_l, inner_c)
        self.linear = None
        if net.config.linear:  # the folded (C, C) map, applied to (B, L, C) rows
            u, p = net.unproject.weight.detach()[:, :, 0], net.project.weight.detach()[:, :, 0]
            self.linear = ((u @ p).T.contiguous(), (u @ net.project.bias.detach() + net.unproject.bias.detach()))
        self.dec = []
        for layer in net.decoder:
            if isinstance(layer, nn.ConvTranspose1d):
                w = layer.weight.detach()  # (in, out, 4)
                self.dec.append((w.permute(0, 2, 1).reshape(w.shape[0], -1).contiguous(), layer.bias.detach().clone()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        linear = None if self.linear is None else torch.addmm(self.linear[1], x.reshape(-1, x.shape[2]),
                                                               self.linear[0]).view(x.shape)
        for w, bias in self.enc:
            length, ch = x.shape[1], x.shape[2]
            pairs = F.pad(x, (0, 0, 1, 1)).view(b, length // 2 + 1, 2 * ch)
            q = pairs @ w  # (B, L/2+1, 2*out)
            out = w.shape[1] // 2
            x = torch.relu_((q[:, :-1, :out] + q[:, 1:, out:]).add_(bias))
        z = x.reshape(b, -1) @ self.to_w + self.to_b
        x = torch.relu_(torch.addmm(self.from_b, z, self.from_w)).view(b, *self.inner)
        for i, (w, bias) in enumerate(self.dec):
            length = x.shape[1]
            out = w.shape[1] // 4
            q = (x @ w).view(b, length, 4, out)
            y = q[:, :, 1:3].clone()
            y[:, 1:, 0] += q[:, :-1, 3]
            y[:, :-1, 1] += q[:, 1:, 0]
            x = y.view(b, 2 * length, out).add_(bias)
            if i < len(self.dec) - 1:
                x = torch.relu_(x)
        return x if linear is None else x.add_(linear)


# --- measurements ----------------------------------------------------------------------------------


def measure_model(label: str, config: ModelConfig, n_windows: int, mm: float, naive_windows: int) -> list[dict]:
    flops = flops_per_window(config)
    bundle = make_bundle(config)
    rng = np.random.default_rng(0)
    values = rng.normal(size=(n_windows + config.window - 1, config.channels))
    rows = []

    def row(kind: str, batch, windows_per_s: float) -> dict:
        gf = windows_per_s * flops / 1e9
        return {
            "model": label,
            "path": kind,
            "batch": batch,
            "win/s": windows_per_s,
            "GFLOP/s": gf,
            "% mm": 100 * gf / mm,
        }

    for batch in BATCHES:
        scorer = Scorer(bundle, device="cpu", batch_size=batch)
        t = best_time(lambda s=scorer: s.score_series(values), 2)
        rows.append(row("score_series", batch, n_windows / t))
    net = bundle.build_model()
    for batch in BATCHES:
        x = torch.randn(batch, config.channels, config.window)
        reps = max(1, 16384 // batch)

        def fwd(x=x, reps=reps) -> None:
            with torch.inference_mode():
                for _ in range(reps):
                    net(x)

        rows.append(row("model(x) only", batch, batch * reps / best_time(fwd, 3)))
    one = torch.randn(naive_windows, config.channels, config.window)

    def naive() -> None:
        with torch.inference_mode():
            for i in range(naive_windows):
                net(one[i : i + 1])

    rows.append(row("one window/call", 1, naive_windows / best_time(naive, 1)))
    return rows


def prototypes(config: ModelConfig, mm: float, batch: int = 4096) -> list[dict]:
    """The default network's forward in other forms, same weights, outputs checked equal."""
    flops = flops_per_window(config)
    net = make_bundle(config).build_model()
    x = torch.randn(batch, config.channels, config.window)
    x_cl = x.transpose(1, 2).contiguous()
    with torch.inference_mode():
        ref = net(x)
    forms: dict[str, tuple] = {"eager (as shipped)": (net, x, lambda y: y)}
    try:
        with torch.inference_mode():
            # traced, not scripted: forward reads the ModelConfig dataclass, which TorchScript cannot type
            traced = torch.jit.trace(net.eval(), x)
            frozen = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
        forms["jit trace + freeze + optimize_for_inference"] = (frozen, x, lambda y: y)
    except Exception as exc:  # not every build supports every JIT pass
        first = next((line for line in str(exc).splitlines() if line.strip()), "")
        print(f"jit form skipped: {type(exc).__name__}: {first[:120]}")
    forms["matmul-form (channels-last GEMMs)"] = (MatmulForm(net), x_cl, lambda y: y.transpose(1, 2))
    if os.environ.get("BENCH_COMPILE") == "1":
        try:
            compiled = torch.compile(net)
            with torch.inference_mode():
                compiled(x)
            forms["torch.compile (inductor)"] = (compiled, x, lambda y: y)
        except Exception as exc:  # needs a C compiler and a while; optional
            print(f"torch.compile skipped: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
    rows = []
    for name, (model, inp, back) in forms.items():
        with torch.inference_mode():
            diff = float((back(model(inp)) - ref).abs().max())

        def fwd(model=model, inp=inp) -> None:
            with torch.inference_mode():
                for _ in range(4):
                    model(inp)

        wps = 4 * batch / best_time(fwd, 3)
        gf = wps * flops / 1e9
        rows.append(
            {"form": name, "batch": batch, "win/s": wps, "GFLOP/s": gf, "% mm": 100 * gf / mm, "max|diff|": diff}
        )
    return rows


def profile(config: ModelConfig, batch: int = 4096) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    net = make_bundle(config).build_model()
    x = torch.randn(batch, config.channels, config.window)
    with torch.inference_mode():
        net(x)
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(5):
                net(x)
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    print(f"\ntorch.profiler, default model forward, batch {batch}, 5 calls: share of self CPU time by op")
    print(f"{'op':40s}  {'calls':>6s}  {'self ms':>8s}  {'share':>6s}")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:12]:
        share = e.self_cpu_time_total / total
        print(f"{e.key[:40]:40s}  {e.count:6d}  {e.self_cpu_time_total / 1e3:8.1f}  {share:6.1%}")


def layer_times(config: ModelConfig, mm: float, batch: int = 4096) -> None:
    """Each layer alone at ``batch``: time, FLOPs and GFLOP/s (where the time goes, per layer)."""
    net = make_bundle(config).build_model()
    x = torch.randn(batch, config.channels, config.window)
    print(f"\nper layer, default model, batch {batch}")
    print(f"{'layer':44s}  {'in shape':>16s}  {'ms':>7s}  {'MFLOP/win':>9s}  {'GFLOP/s':>8s}  {'% mm':>5s}")
    steps = [*net.encoder, "flatten", net.to_latent, *net.from_latent, "view", *net.decoder]
    with torch.inference_mode():
        for layer in steps:
            if layer == "flatten":
                x = x.flatten(1)
                continue
            if layer == "view":
                x = x.view(-1, *net._inner)
                continue
            t = best_time(lambda layer=layer, x=x: layer(x), 5)
            y = layer(x)
            if isinstance(layer, nn.Conv1d):
                fl = 2 * y.shape[2] * layer.out_channels * layer.in_channels * 4
            elif isinstance(layer, nn.ConvTranspose1d):
                fl = 2 * x.shape[2] * layer.out_channels * layer.in_channels * 4
            elif isinstance(layer, nn.Linear):
                fl = 2 * layer.in_features * layer.out_features
            else:
                fl = 0
            gf = fl * batch / t / 1e9
            name = repr(layer).split("(")[0] + ("(" + repr(layer).split("(", 1)[1] if "(" in repr(layer) else "")
            print(
                f"{name[:44]:44s}  {str(tuple(x.shape[1:])):>16s}  {t * 1e3:7.2f}  {fl / 1e6:9.3f}  {gf:8.1f}  "
                f"{100 * gf / mm:5.1f}"
            )
            x = y


def print_table(rows: list[dict]) -> None:
    cols = list(rows[0])

    def fmt(v) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1e-2 else (f"{v:.1f}" if v < 1e5 else f"{v:.0f}")
        return str(v)

    cells = [[fmt(r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(cols)]
    print("  ".join(c.rjust(w) for c, w in zip(cols, widths, strict=True)))
    for r in cells:
        print("  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer windows, skip the profiler")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    n_windows = 50_000 if args.quick else 200_000
    naive_windows = 1_000 if args.quick else 5_000
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cpus {os.cpu_count()}")
    mm = matmul_gflops()
    print(f"matmul 2048x2048 @ 2048x2048 float32: {mm:.1f} GFLOP/s (the machine's practical limit here)")
    default = make_config(8, 32, 32)
    large = make_config(8, 64, 64)
    for label, cfg in (("default", default), ("large", large)):
        print(f"{label}: {cfg} -> {flops_per_window(cfg) / 1e6:.3f} MFLOP per window")
    rows = []
    for label, cfg in (("default", default), ("large", large)):
        rows += measure_model(label, cfg, n_windows, mm, naive_windows)
    print(f"\nthroughput over {n_windows} windows (score_series: whole pipeline; best of 2-3 runs)")
    print_table(rows)
    for label in ("default", "large"):
        batched = max(
            (r for r in rows if r["model"] == label and r["path"] == "score_series"), key=lambda r: r["win/s"]
        )
        naive = next(r for r in rows if r["model"] == label and r["path"] == "one window/call")
        print(
            f"{label}: best score_series batch {batched['batch']}: {batched['win/s']:.0f} win/s = "
            f"{batched['% mm']:.1f}% of matmul, {batched['win/s'] / naive['win/s']:.1f}x one-window-at-a-time"
        )
    print("\nprototypes of the default forward (same weights; max|diff| vs the shipped model)")
    print_table(prototypes(default, mm))
    if not args.quick:
        layer_times(default, mm)
        profile(default)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
