"""What `model.quantize=nf4|int8` costs and saves: loss parity, speed and weight bytes against the full-precision base.

- weight bytes of the 2B DiT per storage, computed exactly from its shapes (training/memory.py), checked against
  what one real-size quantized layer holds;
- final smoothed loss of the same run (same seed, data and adapter start) on each base: the demo (tiny model), and
  real width (hidden 2048, `--layers` layers, 10 s synthetic songs) with its median s/step on this machine;
- the adapter trained at real width on NF4, applied to the full-precision base and to the NF4 base: how far apart
  the two predictions are, and how alike the adapter's effect on each is.

    python scripts/bench_quantize.py [--demo-steps 40] [--steps 20] [--layers 2]
"""

import argparse
import copy
import logging
import statistics
import tempfile
from pathlib import Path

import torch
from hydra import compose, initialize_config_module
from peft import set_peft_model_state_dict

from sidestep.adapters.files import read_adapter
from sidestep.config import prepare, register_schemas
from sidestep.models.quantize import make_quantizable, place_weights
from sidestep.models.source import model_source
from sidestep.train import train_adapter
from sidestep.training.memory import GB, loaded_bytes, quantized_bytes, weight_bytes

MODES = [None, "int8", "nf4"]
REAL_WIDTH = ["model.arch.hidden_size=2048", "model.arch.intermediate_size=6144", "model.arch.num_attention_heads=16",
              "model.arch.num_key_value_heads=8", "model.arch.head_dim=128", "model.arch.sliding_window=128",
              "model.arch.encoder_hidden_size=2048", "data.synthetic.seconds=10", "data.synthetic.text_tokens=64",
              "adapter.rank=16", "trainer.batch_size=1", "trainer.gradient_accumulation=1", "scheduler.warmup_steps=2",
              "optimizer.lr=1e-3"]


def composed(*overrides: str):
    with initialize_config_module(config_module="sidestep.conf", version_base="1.3"):
        return prepare(compose(config_name="train", overrides=["experiment=demo", "ui.yes=true", "ui.plain=true",
                                                                "sample.every_n_epochs=null", *overrides]))


def weight_table() -> None:
    model = composed("model=turbo", "data.dataset_dir=.", "data.synthetic=null").model
    full = weight_bytes(model, None, torch.bfloat16)
    print("DiT weight bytes at the 2B shapes (exact, from the shapes):")
    for mode in MODES:
        size = weight_bytes(model, mode, torch.bfloat16)
        print(f"  {mode or 'bf16':5s} {size / GB:6.3f} GB  ({size / full:.3f} of bf16)")
    for mode in ("int8", "nf4"):  # the formula against what bitsandbytes really stores for the MLP's largest layer
        holder = torch.nn.Module()
        holder.layers = torch.nn.ModuleList([torch.nn.Module()])
        with torch.device("meta"):
            holder.layers[0].proj = torch.nn.Linear(2048, 6144, bias=False)
        make_quantizable(holder, mode, torch.bfloat16)
        place_weights(holder, [("layers.0.proj.weight", torch.randn(6144, 2048, dtype=torch.bfloat16))],
                      torch.device("cpu"))
        print(f"  one 6144 x 2048 {mode} layer: formula {quantized_bytes((6144, 2048), mode):,} B, "
              f"bitsandbytes holds {loaded_bytes(holder):,} B")


def runs(name: str, overrides, steps: int, cache: str):
    """One run per storage; returns {mode: (final loss, median s/step, adapter dir)}."""
    results = {}
    for mode in MODES:
        run_dir = Path(tempfile.mkdtemp(prefix=f"q-{mode}-"))
        cfg = composed(*overrides, f"trainer.max_steps={steps}", f"data.synthetic.cache_dir={cache}",
                       *([f"model.quantize={mode}"] if mode else []))
        result = train_adapter(cfg, run_dir)
        seconds = statistics.median(result.step_seconds[2:] or result.step_seconds)
        results[mode] = (result.final_loss, seconds, result.adapter_dir, cfg)
    base_loss, base_speed = results[None][0], results[None][1]
    print(f"{name}, {steps} steps:")
    for mode, (loss, seconds, _, _) in results.items():
        print(f"  {mode or 'full':5s} final smoothed loss {loss:.4f} ({loss / base_loss:.3f} of full precision), "
              f"{seconds:.2f} s/step ({seconds / base_speed:.2f}x)")
    return results


def transfer(results) -> None:
    """The NF4-trained adapter on the full-precision DiT and on the NF4 DiT, one fixed batch."""
    _, _, adapter_dir, nf4_cfg = results["nf4"]
    weights, config = read_adapter(adapter_dir)
    gen = torch.Generator().manual_seed(0)
    arch = nf4_cfg.model.arch
    batch = dict(hidden_states=torch.randn(1, 250, 64, generator=gen), timestep=torch.tensor([0.5]),
                 timestep_r=torch.tensor([0.5]), encoder_hidden_states=torch.randn(1, 64, arch.encoder_hidden_size,
                                                                                    generator=gen),
                 context_latents=torch.randn(1, 250, 128, generator=gen))
    outputs = {}
    for mode in (None, "nf4"):
        model_cfg = copy.deepcopy(nf4_cfg.model)
        model_cfg.quantize = mode
        transformer = model_source(model_cfg).dit().transformer.eval()
        with torch.no_grad():
            plain = transformer(**batch, return_dict=False)[0]
            transformer.add_adapter(config)
            set_peft_model_state_dict(transformer, weights)
            outputs[mode] = plain, transformer(**batch, return_dict=False)[0]
    (fp, fp_lora), (q, q_lora) = outputs[None], outputs["nf4"]
    relative = lambda a, b: float((a - b).norm() / b.norm())  # noqa: E731
    effect = torch.nn.functional.cosine_similarity((fp_lora - fp).flatten(), (q_lora - q).flatten(), dim=0)
    print("NF4-trained adapter, real width, one fixed batch:")
    print(f"  full-precision base + adapter vs NF4 base + adapter: relative difference {relative(q_lora, fp_lora):.4f} "
          f"(the bases alone: {relative(q, fp):.4f})")
    print(f"  the adapter's effect on each base: cosine {float(effect):.4f}, "
          f"size ratio {float((q_lora - q).norm() / (fp_lora - fp).norm()):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-steps", type=int, default=40)
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps at real width")
    parser.add_argument("--layers", type=int, default=2)
    args = parser.parse_args()
    register_schemas()
    logging.disable(logging.INFO)
    weight_table()
    with tempfile.TemporaryDirectory() as cache:
        runs("demo (tiny model)", [], args.demo_steps, cache)
        real = runs(f"real width (hidden 2048, {args.layers} layers, 10 s songs, CPU fp32)",
                    [*REAL_WIDTH, f"model.arch.num_hidden_layers={args.layers}"], args.steps, cache)
    transfer(real)


if __name__ == "__main__":
    main()
