"""Training-step overhead of Side-Step's loop over a bare PyTorch + PEFT loop doing the same math.

Both run in this process on the same model and the same batch shape: the project through `fit()` (data loader,
cropping, Accelerate, generators, logging), the bare loop as a hand-written forward / MSE / backward / clip /
AdamW step on one pre-built batch. Rounds alternate their order to cancel drift; we compare mean step time after warm-up.

    python scripts/bench_step.py            # tiny model, then 2 layers at real width (hidden 2048, 250 frames)
Prints one line per model and ends with `overhead_ratio=<project / bare>` for the real-width model.
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_module

from sidestep.config import prepare, register_schemas
from sidestep.models.dit import build_dit
from sidestep.training.flow_matching import StepSettings, sample_timesteps
from sidestep.training.loop import fit
from sidestep.training.lora import peft_config

REAL_WIDTH = [
    "model.arch.hidden_size=2048", "model.arch.intermediate_size=6144", "model.arch.num_hidden_layers=2",
    "model.arch.num_attention_heads=16", "model.arch.num_key_value_heads=8", "model.arch.head_dim=128",
    "model.arch.sliding_window=128", "model.arch.encoder_hidden_size=2048", "lora.rank=64", "lora.alpha=128",
    "data.synthetic.seconds=10", "data.synthetic.text_tokens=64",
]


def project_config(extra, steps, cache):
    with initialize_config_module(config_module="sidestep.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=[
            "experiment=demo", "ui.yes=true", "ui.plain=true", f"trainer.max_steps={steps}", "trainer.batch_size=1",
            "trainer.gradient_accumulation=1", "lora.dropout=0.0", "sample.every_n_epochs=null",
            f"data.synthetic.cache_dir={cache}", *extra])
    return prepare(cfg)


def project_steps(cfg, warmup):
    with tempfile.TemporaryDirectory() as run_dir:
        return fit(cfg, Path(run_dir)).step_seconds[warmup:]


def bare_steps(cfg, steps, warmup):
    """The floor: the same DiT + PEFT LoRA, one fixed batch, no framework."""
    transformer = build_dit(cfg.model).transformer
    transformer.add_adapter(peft_config(cfg.lora, cfg.attention))
    params = [p for p in transformer.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.optimizer.lr, weight_decay=cfg.optimizer.weight_decay)
    frames = int(cfg.data.synthetic.seconds * 25)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(1, frames, 64, generator=gen)
    enc = torch.randn(1, cfg.data.synthetic.text_tokens, cfg.model.arch.encoder_hidden_size, generator=gen)
    ctx = torch.randn(1, frames, 128, generator=gen)
    settings = StepSettings.from_config(cfg.training, cfg.model)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        t = sample_timesteps(settings, 1, gen)
        noise = torch.randn(x0.shape, generator=gen)
        xt = t[:, None, None] * noise + (1 - t[:, None, None]) * x0
        pred = transformer(hidden_states=xt, timestep=t, timestep_r=t, encoder_hidden_states=enc, context_latents=ctx,
                           return_dict=False)[0]
        loss = (pred - (noise - x0)).pow(2).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.trainer.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return times[warmup:]


def compare(name, extra, steps, rounds, cache):
    cfg = project_config(extra, steps, cache)
    warmup = max(2, steps // 10)
    project, bare = [], []
    for round_ in range(rounds):  # alternate which goes first, so neither always runs on a warmer machine
        if round_ % 2:
            bare += bare_steps(cfg, steps, warmup)
        project += project_steps(cfg, warmup)
        if not round_ % 2:
            bare += bare_steps(cfg, steps, warmup)
    p, b = statistics.mean(project), statistics.mean(bare)
    print(f"{name}: project {p * 1000:.1f} ms/step, bare {b * 1000:.1f} ms/step, ratio {p / b:.3f} "
          f"({len(project)} steps each)", flush=True)
    return p / b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per round at real width")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    register_schemas()
    torch.set_num_threads(torch.get_num_threads())
    with tempfile.TemporaryDirectory() as cache:
        compare("tiny (hidden 64, 2 layers, 100 frames)", [], 100, args.rounds, cache)
        ratio = compare("real width (hidden 2048, 2 layers, 250 frames, LoRA r64 q/k/v/o both)", REAL_WIDTH,
                        args.steps, args.rounds, cache)
    print(f"overhead_ratio={ratio:.3f}")


if __name__ == "__main__":
    main()
