"""GPU speed of the training step: every vram= preset, batch 1 and 4, 60 s crops, checkpointing on and off.

    python scripts/bench_gpu.py              # on a CUDA machine: the table below, in under 8 minutes on one H100
    python scripts/bench_gpu.py --smoke      # the same code path on the CPU with a tiny DiT (what the tests run)

For each setting it prints s/step through `train_adapter()`, audio-seconds trained per second, model FLOPs utilisation
(FLOPs counted by torch's FlopCounterMode from the shapes of one step, peak from the card's datasheet), peak VRAM,
and the ratio to the bare PyTorch + PEFT loop of `bench_step.py` run in the same process. The DiT is the 2B
turbo/base/sft shape with random weights, written once as an ACE-Step variant folder and loaded the way a real
checkpoint is. On a machine without a GPU it says so and exits 0.
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_step import bare_steps
from hydra import compose, initialize_config_module
from safetensors.torch import save_file
from torch.utils.flop_counter import FlopCounterMode

from sidestep.config import register_schemas, resolve
from sidestep.models.keymap import diffusers_key_to_decoder
from sidestep.models.source import model_source
from sidestep.train import train_adapter

PRESETS = ("8gb", "12gb", "16gb", "24gb_plus")
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "H800": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12,
             "RTX 4090": 165e12, "RTX 3090": 71e12, "A10": 125e12}  # dense bf16 tensor-core FLOP/s (datasheets)
FULL_ARCH = {"hidden_size": 2048, "intermediate_size": 6144, "num_hidden_layers": 24, "num_attention_heads": 16,
             "num_key_value_heads": 8, "head_dim": 128, "in_channels": 192, "audio_acoustic_hidden_dim": 64,
             "patch_size": 2, "sliding_window": 128, "encoder_hidden_size": 2048, "rope_theta": 1_000_000.0}
SMOKE_ARCH = {**FULL_ARCH, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "sliding_window": 8,
              "encoder_hidden_size": 64}


def write_variant(folder: Path, arch: dict, device: str) -> Path:
    """A random DiT of `arch` as an ACE-Step variant folder (original key names, config.json)."""
    from diffusers.models.transformers.ace_step_transformer import AceStepTransformer1DModel

    variant = folder / "acestep-v15-turbo"
    variant.mkdir(parents=True)
    with torch.device(device):  # initialising 2B weights on the GPU takes a second, on the CPU a minute
        dit = AceStepTransformer1DModel(**arch, is_turbo=True).to(torch.bfloat16)
    state = {diffusers_key_to_decoder(k): v.cpu().contiguous() for k, v in dit.state_dict().items()}
    state["null_condition_emb"] = torch.randn(1, 1, arch["encoder_hidden_size"], dtype=torch.bfloat16)
    save_file(state, variant / "model.safetensors")
    (variant / "config.json").write_text(json.dumps({**arch, "is_turbo": True}))
    return folder


def config(preset, batch, checkpointing, steps, checkpoints, cache, device, seconds):
    with initialize_config_module(config_module="sidestep.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=[
            "model=turbo", f"model.checkpoint_dir={checkpoints}", "data=synthetic", f"data.synthetic.cache_dir={cache}",
            f"data.synthetic.seconds={seconds}", "data.synthetic.text_tokens=64", f"vram={preset}",
            f"data.crop_seconds={seconds}", f"trainer.batch_size={batch}", "trainer.gradient_accumulation=1",
            f"trainer.gradient_checkpointing={checkpointing}", f"trainer.max_steps={steps}", f"trainer.device={device}",
            "trainer.log_every=1000", "trainer.save_every=100000", "sample.every_n_epochs=null", "ui.yes=true",
            "ui.plain=true", "adapter.dropout=0.0"])
    return resolve(cfg)


def step_flops(cfg, device) -> float:
    """FLOPs of one training step (forward and backward) at this setting, counted from the shapes."""
    transformer = model_source(cfg.model).dit(torch.bfloat16 if device == "cuda" else torch.float32).transformer.to(device)
    frames = int(cfg.data.crop_seconds * 25)
    b = cfg.trainer.batch_size
    x = torch.randn(b, frames, 64, device=device, dtype=transformer.dtype, requires_grad=True)
    enc = torch.randn(b, 64, cfg.model.arch.encoder_hidden_size, device=device, dtype=transformer.dtype)
    ctx = torch.randn(b, frames, 128, device=device, dtype=transformer.dtype)
    t = torch.full((b,), 0.5, device=device, dtype=transformer.dtype)
    with FlopCounterMode(display=False) as counter:
        transformer(hidden_states=x, timestep=t, timestep_r=t, encoder_hidden_states=enc, context_latents=ctx,
                    return_dict=False)[0].float().pow(2).mean().backward()
    return float(counter.get_total_flops())


def peak_flops(device) -> float:
    name = torch.cuda.get_device_name() if device == "cuda" else ""
    return next((v for k, v in PEAK_BF16.items() if k in name), float("nan"))


def measure(cfg, device, steps, warmup) -> dict:
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as run:
        project = statistics.median(train_adapter(cfg, Path(run)).step_seconds[warmup:])
    vram = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    bare = statistics.median(bare_steps(cfg, steps, warmup, device=device))
    return {"s_step": project, "bare_ratio": project / bare, "vram_gib": vram}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny DiT on the CPU, one preset: checks the code path")
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    device = "cpu" if args.smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("bench_gpu: no CUDA GPU here, nothing to measure (run it on a GPU machine; --smoke checks the code path)")
        return
    register_schemas()
    presets, seconds = (PRESETS[:1], 4) if args.smoke else (PRESETS, 60)
    arch = SMOKE_ARCH if args.smoke else FULL_ARCH
    warmup = max(2, args.steps // 3)
    peak = peak_flops(device)
    print(f"device: {torch.cuda.get_device_name() if device == 'cuda' else 'cpu (smoke)'}; {seconds} s crops, "
          f"{args.steps} steps per setting ({warmup} warm-up)", flush=True)
    print("| preset | batch | checkpointing | s/step | audio s / s | MFU | peak VRAM GiB | / bare loop |")
    print("|---|---|---|---|---|---|---|---|")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        checkpoints = write_variant(Path(tmp) / "checkpoints", arch, device)
        for preset in presets:
            for batch in (1, 4):
                for checkpointing in (True, False):
                    cfg = config(preset, batch, checkpointing, args.steps, checkpoints, Path(tmp) / "cache", device,
                                 seconds)
                    try:
                        row = measure(cfg, device, args.steps, warmup)
                    except torch.OutOfMemoryError:
                        print(f"| {preset} | {batch} | {checkpointing} | out of memory | | | | |", flush=True)
                        continue
                    flops = step_flops(cfg, device)
                    mfu = flops / row["s_step"] / peak
                    print(f"| {preset} | {batch} | {'on' if checkpointing else 'off'} | {row['s_step']:.3f} | "
                          f"{batch * seconds / row['s_step']:.0f} | {mfu:.1%} | {row['vram_gib']:.1f} | "
                          f"{row['bare_ratio']:.2f} |", flush=True)
    print(f"bench_gpu: {time.perf_counter() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
