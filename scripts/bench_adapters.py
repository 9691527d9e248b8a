"""Each adapter type at its preset size, so users can choose: what it trains, how big its files are, how fast a
training step is beside LoRA r64, and where the demo's loss ends.

At real width (hidden 2048, 2 layers, 250 frames = 10 s) on this machine's CPU: trainable parameters (PEFT's
count), the PEFT file and the ComfyUI file at bf16 (export.dtype's default), and s/step of a bare forward /
backward / AdamW step (the fastest of a few), relative to LoRA r64 timed in the same rounds (rounds alternate the
order to cancel drift; the median of the rounds' ratios is printed, ± half their spread). The demo column is
`experiment=demo` cut to --demo-steps steps.

    python scripts/bench_adapters.py [--steps 4] [--rounds 3] [--demo-steps 60]
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_module

from sidestep.adapters.attach import adapter_config, add_adapter, save_adapter, trainable_parameters
from sidestep.config import prepare, register_schemas
from sidestep.models.source import model_source
from sidestep.train import train_adapter

TYPES = ["lora", "dora", "lokr", "loha", "oft"]
REAL_WIDTH = [
    "model.arch.hidden_size=2048", "model.arch.intermediate_size=6144", "model.arch.num_hidden_layers=2",
    "model.arch.num_attention_heads=16", "model.arch.num_key_value_heads=8", "model.arch.head_dim=128",
    "model.arch.sliding_window=128", "model.arch.encoder_hidden_size=2048", "adapter.rank=64", "adapter.alpha=128",
    "adapter.dropout=0.0", "export.dtype=bf16",
]
FRAMES, TEXT_TOKENS = 250, 64


def config(kind, cache, *extra):
    with initialize_config_module(config_module="sidestep.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=[
            "experiment=demo", f"adapter={kind}", "ui.yes=true", "ui.plain=true", "sample.every_n_epochs=null",
            f"data.synthetic.cache_dir={cache}", *extra])
    return prepare(cfg)


def adapted(cfg):
    transformer = model_source(cfg.model).dit().transformer
    add_adapter(transformer, adapter_config(cfg), seed=0)
    return transformer


def file_sizes(cfg, transformer):
    """(PEFT file, ComfyUI file) in MiB at export.dtype."""
    with tempfile.TemporaryDirectory() as folder:
        save_adapter(transformer, Path(folder) / "adapter", "bench", cfg.export.dtype)
        peft = Path(folder) / "adapter" / "acestep" / "bench" / "adapter_model.safetensors"
        comfy = Path(folder) / "adapter" / "comfyui" / "bench.safetensors"
        return peft.stat().st_size / 2**20, comfy.stat().st_size / 2**20


def step_seconds(transformer, steps):
    """Fastest of `steps` bare training steps on one fixed batch, after one warm-up step: on a shared machine the
    fastest is the step least slowed by others."""
    params = [p for p in transformer.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, FRAMES, 64, generator=gen)
    enc = torch.randn(1, TEXT_TOKENS, 2048, generator=gen)
    ctx = torch.randn(1, FRAMES, 128, generator=gen)
    t = torch.tensor([0.5])
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        pred = transformer(hidden_states=x, timestep=t, timestep_r=t, encoder_hidden_states=enc, context_latents=ctx,
                           return_dict=False)[0]
        pred.pow(2).mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return min(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--demo-steps", type=int, default=60)
    args = parser.parse_args()
    register_schemas()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as cache:
        cfgs = {kind: config(kind, cache, *REAL_WIDTH) for kind in TYPES}
        models = {kind: adapted(cfg) for kind, cfg in cfgs.items()}
        params = {kind: trainable_parameters(cfg) for kind, cfg in cfgs.items()}
        sizes = {kind: file_sizes(cfgs[kind], model) for kind, model in models.items()}
        ratios = {kind: [] for kind in TYPES}
        lora_seconds = []
        for round_ in range(args.rounds):
            order = TYPES if round_ % 2 == 0 else TYPES[::-1]
            seconds = {kind: step_seconds(models[kind], args.steps) for kind in order}
            lora_seconds.append(seconds["lora"])
            for kind in TYPES:
                ratios[kind].append(seconds[kind] / seconds["lora"])
        del models
        losses = {}
        for kind in TYPES:
            demo = config(kind, cache, f"trainer.max_steps={args.demo_steps}")
            with tempfile.TemporaryDirectory() as run_dir:
                losses[kind] = train_adapter(demo, Path(run_dir)).final_loss
    print(f"real width, CPU ({torch.get_num_threads()} threads); LoRA r64 step {statistics.median(lora_seconds):.2f} s; "
          f"demo cut to {args.demo_steps} steps")
    print("| adapter | trainable parameters | PEFT file (bf16) | ComfyUI file (bf16) | s/step vs LoRA r64 | demo final loss |")
    print("|---|---:|---:|---:|---:|---:|")
    for kind in TYPES:
        ratio = statistics.median(ratios[kind])
        spread = max(ratios[kind]) - min(ratios[kind])
        print(f"| {kind} | {params[kind]:,} | {sizes[kind][0]:.2f} MiB | {sizes[kind][1]:.2f} MiB | "
              f"{ratio:.2f}x (±{spread / 2:.2f}) | {losses[kind]:.4f} |")


if __name__ == "__main__":
    main()
