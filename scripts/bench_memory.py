"""Predicted ÷ measured peak memory of a training step for every `vram=` preset (training/memory.py's model).

Each preset is measured in its own process, on an original-layout checkpoint at the real width (hidden 2048, the
2B DiT's heads and MLP) with `--layers` layers, loaded through the real loader (quantized tensor by tensor where the
preset says so), with the preset's rank, targets, optimizer, batch, checkpointing and storage, on `--seconds` crops:
- on a CUDA GPU: `torch.cuda.max_memory_allocated` (bf16 weights, as training uses them);
- on the CPU: the process's peak resident memory during the steps (VmHWM, reset after loading) less what it held
  before loading (fp32), with glibc returning freed memory at once (FRESH_PAGES). Loading's own peak is the anonymous memory it took (RssAnon, sampled): the weight file's
  pages it maps while reading are page cache, not a copy, and the kernel takes them back.
Then the predicted peak of each preset on the full 24-layer DiT at its own crop, bf16 on a GPU.

    python scripts/bench_memory.py [--layers 2] [--seconds 20] [--steps 2]
Prints markdown tables: the README's VRAM table is this output.
"""

import argparse
import ctypes
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_module

from sidestep.config import prepare, register_schemas
from sidestep.models.tiny import write_checkpoints
from sidestep.training.memory import ACESTEP_HELPERS, GB, WHOLE_SONG_SECONDS, predict

PRESETS = ["8gb", "12gb", "16gb", "24gb_plus"]
EXTRA = {"16gb, checkpointing off": ("16gb", ["trainer.gradient_checkpointing=false"])}
REAL_WIDTH = ["model.arch.hidden_size=2048", "model.arch.intermediate_size=6144", "model.arch.num_attention_heads=16",
              "model.arch.num_key_value_heads=8", "model.arch.head_dim=128", "model.arch.sliding_window=128",
              "model.arch.encoder_hidden_size=2048"]
ENCODER_TOKENS = 64
# glibc hands every allocation over 64 kB straight back to the kernel when freed, so resident memory is the live
# tensors; its default heap keeps freed activations' pages and the peak would measure fragmentation (about 0.3 to
# 0.5 GB more at these sizes)
FRESH_PAGES = {"MALLOC_MMAP_THRESHOLD_": "65536"}


def composed(*overrides: str):
    register_schemas()
    with initialize_config_module(config_module="sidestep.conf", version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def status(field: str) -> int:
    """A /proc/self/status memory field, in bytes."""
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.M).group(1)) * 1024


class AnonymousPeak:
    """The peak of the process's anonymous resident memory (RssAnon: not the file pages a memory map brings in),
    sampled every 5 ms while the block runs."""

    def __enter__(self):
        self.start = self.peak = status("RssAnon")
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, status("RssAnon"))
            time.sleep(0.005)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, status("RssAnon"))


def measure(preset: str, extra, root: Path, seconds: float, steps: int) -> dict:
    """One preset's training steps in this process; the peak it took, and the prediction for the same setup."""
    from sidestep.adapters.attach import adapter_config, add_adapter
    from sidestep.config import resolve

    cuda = torch.cuda.is_available()
    device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    cfg = resolve(prepare(composed("model=turbo", f"model.checkpoint_dir={root}", f"data.dataset_dir={root}",
                                   f"vram={preset}", f"data.crop_seconds={seconds}", "sample.every_n_epochs=null",
                                   *extra)))
    frames, batch = int(seconds * 25), cfg.trainer.batch_size
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(batch, frames, 64, generator=gen).to(device)
    enc = torch.randn(batch, ENCODER_TOKENS, cfg.model.arch.encoder_hidden_size, generator=gen).to(device)
    ctx = torch.randn(batch, frames, 128, generator=gen).to(device)
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident size
        before = status("VmRSS")
    from hydra.utils import instantiate

    from sidestep.models.source import model_source

    with AnonymousPeak() as anonymous:
        transformer = model_source(cfg.model).dit(dtype, torch.device(device)).transformer.to(device)
    if cuda:
        loading = torch.cuda.max_memory_allocated() - before
    else:  # the checkpoint file's pages, mapped while it is read, count as resident too: loading is shown apart
        loading = anonymous.peak - anonymous.start
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
    add_adapter(transformer, adapter_config(cfg), 0)
    if cfg.trainer.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    params = [p for p in transformer.parameters() if p.requires_grad]
    optimizer = instantiate(cfg.optimizer, _convert_="all")(params)
    transformer.train()
    start = time.perf_counter()
    for _ in range(steps):
        t = torch.rand(batch, generator=gen).to(device)
        noise = torch.randn(x0.shape, generator=gen).to(device)
        xt = t[:, None, None] * noise + (1 - t[:, None, None]) * x0
        with torch.autocast(device, dtype=dtype, enabled=cuda):
            pred = transformer(hidden_states=xt, timestep=t, timestep_r=t, encoder_hidden_states=enc,
                               context_latents=ctx, return_dict=False)[0]
        (pred.float() - (noise - x0)).pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    seconds_per_step = (time.perf_counter() - start) / steps
    measured = (torch.cuda.max_memory_allocated() if cuda else status("VmHWM")) - before
    plan = predict(cfg, dtype, frames, ENCODER_TOKENS)
    return {"predicted": plan.peak, "measured": measured, "loading": loading, "weights": plan.weights, "activations": plan.activations,
            "device": torch.cuda.get_device_name() if cuda else "CPU", "s_per_step": seconds_per_step,
            "layers": cfg.model.arch.num_hidden_layers, "quantize": str(cfg.model.quantize or "-")}


def full_size_predictions() -> str:
    lines = ["| `vram=` | DiT weights | crop | predicted peak (24 layers, bf16 on a GPU) | weights | activations | samples |",
             "|---|---|---|---|---|---|---|"]
    for preset in PRESETS:
        cfg = prepare(composed("model=turbo", "data.dataset_dir=.", f"vram={preset}"))
        seconds = cfg.data.crop_seconds or WHOLE_SONG_SECONDS
        plan = predict(cfg, torch.bfloat16, int(seconds * 25), helpers=ACESTEP_HELPERS)
        lines.append(f"| `{preset}` | {plan.weight_kind} | {seconds:g} s | {plan.peak / GB:.1f} GB | "
                     f"{plan.weights / GB:.2f} GB | {plan.activations / GB:.2f} GB | {plan.sampling / GB:.2f} GB |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        preset, extra = EXTRA.get(args.measure, (args.measure, []))
        print(json.dumps(measure(preset, extra, Path(args.root), args.seconds, args.steps)))
        return
    with tempfile.TemporaryDirectory() as scratch:
        model = composed("model=tiny", *REAL_WIDTH, f"model.arch.num_hidden_layers={args.layers}").model
        root = Path(scratch)
        write_checkpoints(model, root, variant="turbo")
        rows = ["| setup | device | DiT weights | predicted | measured | predicted ÷ measured | loading peak (anonymous) | s/step |",
                "|---|---|---|---|---|---|---|---|"]
        for name in [*PRESETS, *EXTRA]:
            out = subprocess.run([sys.executable, __file__, "--measure", name, "--root", str(root), "--seconds",
                                  str(args.seconds), "--steps", str(args.steps)], capture_output=True, text=True,
                                 env={**os.environ, **FRESH_PAGES})
            if out.returncode:
                print(out.stderr[-2000:], file=sys.stderr)
                raise SystemExit(f"{name}: measurement failed")
            r = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(f"| `vram={name}` | {r['device']} | {r['quantize']} | {r['predicted'] / GB:.2f} GB | "
                        f"{r['measured'] / GB:.2f} GB | {r['predicted'] / r['measured']:.2f} | {r['loading'] / GB:.2f} GB | "
                        f"{r['s_per_step']:.1f} |")
            print(rows[-1], file=sys.stderr, flush=True)
    print(f"Measured: real width (hidden 2048), {args.layers} layers, {args.seconds:g} s crops, {args.steps} steps, "
          "sampling off.\n")
    print("\n".join(rows))
    print()
    print(full_size_predictions())


if __name__ == "__main__":
    main()
