"""Training-step overhead of Side-Step's loop over a bare PyTorch + PEFT loop doing the same math.

Both run in this process on the same model and the same batch shape: the project through `train_adapter()` (data loader,
cropping, Accelerate, generators, logging), the bare loop as a hand-written forward / MSE / backward / clip /
AdamW step on one pre-built batch. Rounds alternate their order to cancel drift; each round compares median step
times after warm-up, and the result is the median of the rounds' ratios (their spread is printed beside it).

    python scripts/bench_step.py            # tiny model, then 2 layers at real width (hidden 2048, 250 frames)
Prints one line per model and ends with `overhead_ratio=<project / bare>` for the real-width model.

First, the fixed host cost per optimizer step at the demo's tiny width and batch, where the compute is small and
the loop's own work shows: CPU time per step (one thread, so a busy machine changes it little), ours from two runs
of different lengths (set-up and the end-of-run writes cancel), logging and status writes as the demo does them.
Ends that part with `fixed_cost_ms=<ours - bare>`.
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_module

from sidestep.adapters.attach import adapter_config
from sidestep.config import prepare, register_schemas
from sidestep.models.source import model_source
from sidestep.train import train_adapter
from sidestep.training.flow_matching import StepSettings, sample_timesteps

REAL_WIDTH = [
    "model.arch.hidden_size=2048", "model.arch.intermediate_size=6144", "model.arch.num_hidden_layers=2",
    "model.arch.num_attention_heads=16", "model.arch.num_key_value_heads=8", "model.arch.head_dim=128",
    "model.arch.sliding_window=128", "model.arch.encoder_hidden_size=2048", "adapter.rank=64", "adapter.alpha=128",
    "data.synthetic.seconds=10", "data.synthetic.text_tokens=64",
]


def project_config(extra, steps, cache):
    with initialize_config_module(config_module="sidestep.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=[
            "experiment=demo", "ui.yes=true", "ui.plain=true", f"trainer.max_steps={steps}", "trainer.batch_size=1",
            "trainer.gradient_accumulation=1", "adapter.dropout=0.0", "sample.every_n_epochs=null",
            f"data.synthetic.cache_dir={cache}", *extra])
    return prepare(cfg)


def project_steps(cfg, warmup):
    with tempfile.TemporaryDirectory() as run_dir:
        return train_adapter(cfg, Path(run_dir)).step_seconds[warmup:]


def bare_steps(cfg, steps, warmup, device="cpu", clock=time.perf_counter):
    """The floor: the same DiT + PEFT LoRA, one fixed batch, no framework (bf16 weights under autocast on a GPU,
    fp32 LoRA, as the project trains)."""
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    transformer = model_source(cfg.model).dit(dtype).transformer.to(device)
    transformer.add_adapter(adapter_config(cfg))
    params = [p for p in transformer.parameters() if p.requires_grad]
    for param in params:
        param.data = param.data.float()
    opt = torch.optim.AdamW(params, lr=cfg.optimizer.lr, weight_decay=cfg.optimizer.weight_decay)
    frames = int((cfg.data.crop_seconds or cfg.data.synthetic.seconds) * 25)
    batch = cfg.trainer.batch_size
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(batch, frames, 64, generator=gen).to(device)
    enc = torch.randn(batch, cfg.data.synthetic.text_tokens, cfg.model.arch.encoder_hidden_size, generator=gen).to(device)
    ctx = torch.randn(batch, frames, 128, generator=gen).to(device)
    settings = StepSettings.from_config(cfg.timesteps, cfg.model)
    times = []
    for _ in range(steps):
        start = clock()
        t = sample_timesteps(settings, batch, gen).to(device)
        noise = torch.randn(x0.shape, generator=gen).to(device)
        xt = t[:, None, None] * noise + (1 - t[:, None, None]) * x0
        with torch.autocast(device, dtype=dtype, enabled=device == "cuda"):
            pred = transformer(hidden_states=xt, timestep=t, timestep_r=t, encoder_hidden_states=enc,
                               context_latents=ctx, return_dict=False)[0]
        loss = (pred.float() - (noise - x0)).pow(2).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.trainer.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(clock() - start)
    return times[warmup:]


TINY = ["trainer.batch_size=4", "trainer.save_every=1000000"]  # the demo's batch; checkpoints are not per step


def cpu_seconds(work) -> float:
    start = time.process_time()
    work()
    return time.process_time() - start


def tiny_fixed_cost(rounds, cache, short=50, long=250):
    """Our loop's CPU time per optimizer step minus the bare loop's, at the demo's width and batch, one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    short_cfg, long_cfg = project_config(TINY, short, cache), project_config(TINY, long, cache)
    ours, bare = [], []
    for _ in range(rounds):  # the bare loop runs between our two runs, so a machine getting busier hits both
        with tempfile.TemporaryDirectory() as run_dir:
            ours_short = cpu_seconds(lambda: train_adapter(short_cfg, Path(run_dir)))
        bare.append(statistics.mean(bare_steps(long_cfg, long, 20, clock=time.process_time)) * 1000)
        with tempfile.TemporaryDirectory() as run_dir:
            ours_long = cpu_seconds(lambda: train_adapter(long_cfg, Path(run_dir)))
        ours.append((ours_long - ours_short) / (long - short) * 1000)
    torch.set_num_threads(threads)
    costs = [o - b for o, b in zip(ours, bare)]  # each round's own difference: drift between rounds cancels
    cost = statistics.median(costs)
    print(f"tiny fixed cost (hidden 64, batch 4, 1 thread, CPU time): ours {statistics.median(ours):.2f} ms/step, "
          f"bare {statistics.median(bare):.2f} ms/step (medians); per round ours - bare "
          f"{', '.join(f'{c:.2f}' for c in costs)} ms ({rounds} rounds)", flush=True)
    print(f"fixed_cost_ms={cost:.2f}", flush=True)
    return cost


def compare(name, extra, steps, rounds, cache):
    """Rounds alternate which loop goes first; each round gives a ratio of median step times, and the result is the
    median of those ratios, so one round disturbed by another process moves it little."""
    cfg = project_config(extra, steps, cache)
    warmup = max(2, steps // 10)
    ratios, project_ms, bare_ms = [], [], []
    for round_ in range(rounds):
        if round_ % 2:
            bare = bare_steps(cfg, steps, warmup)
        project = project_steps(cfg, warmup)
        if not round_ % 2:
            bare = bare_steps(cfg, steps, warmup)
        p, b = statistics.median(project), statistics.median(bare)
        ratios.append(p / b)
        project_ms.append(p * 1000)
        bare_ms.append(b * 1000)
    ratio = statistics.median(ratios)
    print(f"{name}: project {statistics.median(project_ms):.1f} ms/step, bare {statistics.median(bare_ms):.1f} ms/step "
          f"(medians); ratio {ratio:.3f}, per round {', '.join(f'{r:.3f}' for r in ratios)} "
          f"(spread {max(ratios) - min(ratios):.3f}, {rounds} rounds of {steps - warmup} timed steps)", flush=True)
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per round at real width")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--fixed-cost-only", action="store_true", help="only the tiny fixed-cost comparison")
    args = parser.parse_args()
    register_schemas()
    torch.set_num_threads(torch.get_num_threads())
    with tempfile.TemporaryDirectory() as cache:
        tiny_fixed_cost(args.rounds, cache)
        if args.fixed_cost_only:
            return
        compare("tiny (hidden 64, 2 layers, 100 frames)", [], 100, args.rounds, cache)
        ratio = compare("real width (hidden 2048, 2 layers, 250 frames, LoRA r64 q/k/v/o both)", REAL_WIDTH,
                        args.steps, args.rounds, cache)
    print(f"overhead_ratio={ratio:.3f}")


if __name__ == "__main__":
    main()
