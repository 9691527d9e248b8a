"""Peak memory of loading a real-width DiT from an original-layout ACE-Step checkpoint.

Writes random weights for N layers at hidden 2048 (the 2B DiT's width) as `acestep-v15-base/model.safetensors`,
then loads them with the model source (`AceStepCheckpoint.dit`) in a fresh process and reports its peak RSS against the
weight file's size. Loading builds the model on the meta device and fills it tensor by tensor, so the ratio
should stay near 1 (target <= 1.3): there is never a second full copy.

    python scripts/bench_load.py [--layers 8] [--dtype fp32|bf16]
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REAL_WIDTH = dict(hidden_size=2048, intermediate_size=6144, num_attention_heads=16, num_key_value_heads=8, head_dim=128,
                  in_channels=192, audio_acoustic_hidden_dim=64, patch_size=2, sliding_window=128,
                  rope_theta=1_000_000.0, encoder_hidden_size=2048)


def write_checkpoint(root: Path, layers: int, dtype_name: str) -> Path:
    import torch
    from diffusers.models.transformers.ace_step_transformer import (
        AceStepTransformer1DModel,
    )
    from safetensors.torch import save_file

    from sidestep.models.keymap import diffusers_key_to_decoder

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    with torch.device("meta"):
        model = AceStepTransformer1DModel(num_hidden_layers=layers, **REAL_WIDTH)
    gen = torch.Generator().manual_seed(0)
    tensors = {diffusers_key_to_decoder(k): (torch.randn(v.shape, generator=gen) * 0.02).to(dtype)
               for k, v in model.state_dict().items()}
    tensors["null_condition_emb"] = torch.randn(1, 1, 2048, generator=gen).to(dtype)
    folder = root / "acestep-v15-base"
    folder.mkdir(parents=True)
    save_file(tensors, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({**REAL_WIDTH, "num_hidden_layers": layers, "is_turbo": False}))
    return folder / "model.safetensors"


def memory_status(field: str) -> int:
    """Bytes of VmRSS (now) or VmHWM (peak) of this process; unlike ru_maxrss, not inherited from the parent."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status (this benchmark needs Linux)")


def measure(root: Path, layers: int, dtype_name: str) -> None:
    """Child process: baseline after imports, then the high-water mark after loading."""
    import torch
    from omegaconf import OmegaConf

    from sidestep.config import ModelConfig
    from sidestep.models.source import model_source

    cfg = OmegaConf.structured(ModelConfig(variant="base", checkpoint_dir=str(root)))
    cfg.arch = OmegaConf.merge(cfg.arch, {**REAL_WIDTH, "num_hidden_layers": layers})
    baseline = memory_status("VmHWM")
    dit = model_source(cfg).dit({"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name])
    with torch.no_grad():  # touch every weight: memory-mapped tensors only become resident when read
        checksum = sum(float(p.sum()) for p in dit.transformer.parameters())
    peak = memory_status("VmHWM")
    assert checksum == checksum, "NaN in loaded weights"
    params = sum(p.numel() for p in dit.transformer.parameters())
    print(json.dumps({"baseline": baseline, "peak": peak, "params": params}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="stored and loaded dtype")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        return measure(args.measure, args.layers, args.dtype)
    with tempfile.TemporaryDirectory() as tmp:
        weights = write_checkpoint(Path(tmp), args.layers, args.dtype)
        size = weights.stat().st_size
        out = subprocess.run([sys.executable, __file__, "--measure", tmp, "--layers", str(args.layers), "--dtype", args.dtype],
                             capture_output=True, text=True, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    gib = 1024 ** 3
    print(f"{args.layers} layers at hidden 2048, {args.dtype}: {result['params'] / 1e6:.0f}M parameters, "
          f"weight file {size / gib:.2f} GiB")
    print(f"process RSS after imports {result['baseline'] / gib:.2f} GiB, peak after loading and reading every weight "
          f"{result['peak'] / gib:.2f} GiB")
    print(f"loading_rss_ratio={(result['peak'] - result['baseline']) / size:.3f}  (peak minus imports, / file size)")
    print(f"peak_rss_ratio={result['peak'] / size:.3f}  (whole process peak / file size)")


if __name__ == "__main__":
    main()
