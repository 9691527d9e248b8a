"""Every knob refuses a bad value in one line naming it, before any model loads: wrong types, out-of-range numbers
(negative, zero, NaN, infinite, huge), empty strings, lists for scalars and back, files that are missing or are
folders; rank-map files as someone might have edited them; kernels this device cannot run. In-process, on the
checks themselves."""

import json
import math

import pytest
import torch
from omegaconf import OmegaConf

from sidestep.adapters.rank_map import read_rank_map
from sidestep.config import prepare
from sidestep.config.checks import prepare_sample
from sidestep.errors import ConfigError
from sidestep.training import fast_paths
from tests.conftest import compose_cfg

CASES = [  # (override merged onto the demo's config, the key the one line must name)
    ("trainer.seed=-1", "trainer.seed"), ("trainer.seed=99999999999", "trainer.seed"),
    ("trainer.epochs=0", "trainer.epochs"), ("trainer.batch_size=-2", "trainer.batch_size"),
    ("trainer.max_grad_norm=nan", "trainer.max_grad_norm"), ("trainer.max_grad_norm=0", "trainer.max_grad_norm"),
    ("trainer.device=''", "trainer.device"), ("trainer.device=gpu", "trainer.device"),
    ("trainer.compile=sometimes", "trainer.compile"), ("trainer.compile_backend=''", "trainer.compile_backend"),
    ("trainer.compile_backend='  '", "trainer.compile_backend"), ("trainer.keep_checkpoints=0", "trainer.keep_checkpoints"),
    ("trainer.save_every_steps=0", "trainer.save_every_steps"), ("trainer.log_every=-1", "trainer.log_every"),
    ("adapter.rank=0", "adapter.rank"), ("adapter.rank=100000000000", "adapter.rank"), ("adapter.alpha=-1", "adapter.alpha"),
    ("adapter.alpha=inf", "adapter.alpha"), ("adapter.dropout=0.9", "adapter.dropout"), ("adapter.alpha_ratio=0", "adapter.alpha_ratio"),
    ("adapter.target_modules=[]", "adapter.target_modules"), ("adapter.rank_map=/nonexistent.json", "adapter.rank_map"),
    ("adapter.rank_map=/tmp", "adapter.rank_map"), ("optimizer.lr=0", "optimizer.lr"), ("optimizer.lr=-inf", "optimizer.lr"),
    ("optimizer.weight_decay=-0.1", "optimizer.weight_decay"), ("optimizer.betas=[2,3]", "optimizer.betas"),
    ("optimizer.betas=[0.9]", "optimizer.betas"), ("optimizer.eps=0", "optimizer.eps"),
    ("scheduler.warmup_steps=-5", "scheduler.warmup_steps"), ("scheduler.warmup_start_factor=1.5", "scheduler.warmup_start_factor"),
    ("timesteps.cfg_ratio=1.5", "timesteps.cfg_ratio"),
    ("timesteps.min_snr_gamma=0", "timesteps.min_snr_gamma"), ("timesteps.discrete_timesteps=[2.0]", "timesteps.discrete_timesteps"),
    ("model.timestep_sigma=0", "model.timestep_sigma"), ("model.timestep_mu=nan", "model.timestep_mu"),
    ("model.init_seed=-1", "model.init_seed"), ("model.sampling.steps=0", "model.sampling.steps"),
    ("model.sampling.guidance=-1", "model.sampling.guidance"), ("model.sampling.shift=0", "model.sampling.shift"),
    ("model.arch.num_hidden_layers=0", "model.arch.num_hidden_layers"), ("data.crop_seconds=-1", "data.crop_seconds"),
    ("data.crop_seconds=0.01", "data.crop_seconds"), ("data.val_fraction=1", "data.val_fraction"),
    ("data.num_workers=-1", "data.num_workers"), ("data.num_workers=100000", "data.num_workers"),
    ("data.prefetch_factor=0", "data.prefetch_factor"), ("data.synthetic.num_samples=0", "data.synthetic.num_samples"),
    ("data.synthetic.seconds=-4", "data.synthetic.seconds"), ("data.synthetic.styles=0", "data.synthetic.styles"),
    ("data.synthetic.text_tokens=0", "data.synthetic.text_tokens"), ("data.synthetic.seed=-3", "data.synthetic.seed"),
    ("data.synthetic.cache_dir=/etc/hostname", "data.synthetic.cache_dir"), ("sample.count=0", "sample.count"),
    ("sample.every_n_epochs=0", "sample.every_n_epochs"), ("sample.duration=0", "sample.duration"),
    ("sample.duration=1e9", "sample.duration"), ("sample.steps=0", "sample.steps"), ("sample.seed=-1", "sample.seed"),
    ("sample.guidance=-2", "sample.guidance"), ("sample.prompts=[{prompt: ''}]", "sample.prompts[0].prompt"),
    ("sample.prompts=[{prompt: x, bpm: -5}]", "sample.prompts[0].bpm"), ("estimate.batches=0", "estimate.batches"),
    ("estimate.ranks=[]", "estimate.ranks"), ("estimate.ranks=[0,4]", "estimate.ranks"),
    ("estimate.budget_params=0", "estimate.budget_params"), ("run.name=''", "run.name"), ("run.name=a.b", "run.name"),
    ("preprocess.audio_dir=/nonexistent", "preprocess.audio_dir"), ("preprocess.audio_dir=/etc/hostname", "preprocess.audio_dir"),
    ("adapter.rank=[4,8]", "adapter.rank"), ("trainer.epochs=ten", "trainer.epochs"), ("adapter.target_modules=q_proj", "adapter.target_modules"),
    ("adapter.bias=some", "adapter.bias"), ("trainer.precision=fp8", "trainer.precision"), ("export.dtype=int4", "export.dtype"),
]


@pytest.fixture(scope="module")
def demo(cache_dir):
    return compose_cfg(cache_dir, check=False)


@pytest.fixture(scope="module")
def untyped(demo):
    """The demo's values without the schema, as a saved config is read: `prepare` types them itself."""
    return OmegaConf.create(OmegaConf.to_container(demo, resolve=False))


@pytest.mark.parametrize("override, key", CASES)
def test_a_bad_value_is_one_line_naming_its_key(untyped, override, key):
    with pytest.raises(ConfigError) as err:
        prepare(OmegaConf.merge(untyped, OmegaConf.from_dotlist([override])))
    line = str(err.value)
    assert len(line.splitlines()) == 1 and key in line, line


@pytest.mark.parametrize("override, key", [("seed=-1", "seed"), ("prompts=/tmp", "prompts"), ("strength=-1", "strength"),
                                           ("duration=nan", "duration"), ("compare_strengths=[-1]", "compare_strengths")])
def test_a_bad_sampling_value_is_one_line_naming_its_key(demo, override, key, tmp_path):
    cfg = OmegaConf.create({"source": str(tmp_path), "model": demo.model})
    with pytest.raises(ConfigError) as err:
        prepare_sample(OmegaConf.merge(cfg, OmegaConf.from_dotlist([override])))
    assert str(err.value).startswith(key) and len(str(err.value).splitlines()) == 1


def estimate(demo, **changes):
    """An estimate.json for the demo's DiT, with some of it changed as someone might have edited it."""
    module = {"rank": 4, "in_features": 64, "out_features": 64}
    data = {"format": "sidestep.estimate/1", "arch": OmegaConf.to_container(demo.model.arch),
            "modules": {"layers.0.self_attn.to_q": module, "layers.1.mlp.up_proj": {**module, "out_features": 128}}}
    data.update(changes)
    return data


RANK_MAPS = {
    "a list": lambda d: [d], "modules as a list": lambda d: {**d, "modules": list(d["modules"].values())},
    "arch as a list": lambda d: {**d, "arch": [64, 128]},
    "an infinite rank": lambda d: {**d, "modules": {"layers.0.self_attn.to_q": {"rank": math.inf, "in_features": 64,
                                                                                 "out_features": 64}}},
    "a huge rank": lambda d: {**d, "modules": {"layers.0.self_attn.to_q": {"rank": 10**30, "in_features": 64,
                                                                            "out_features": 64}}},
    "huge widths": lambda d: {**d, "modules": {"layers.0.self_attn.to_q": {"rank": 10**6, "in_features": 10**7,
                                                                            "out_features": 10**7}}},
    "a negative rank": lambda d: {**d, "modules": {"layers.0.self_attn.to_q": {"rank": -1, "in_features": 64,
                                                                                "out_features": 64}}},
    "a rank as text": lambda d: {**d, "modules": {"layers.0.self_attn.to_q": {"rank": "4", "in_features": 64,
                                                                               "out_features": 64}}},
    "a regex key": lambda d: {**d, "modules": {r"layers\.\d+\..*": {"rank": 4, "in_features": 64, "out_features": 64}}},
    "a wrong key": lambda d: {**d, "modules": {"layers.0.attn.q": {"rank": 4, "in_features": 64, "out_features": 64}}},
    "a layer it has not": lambda d: {**d, "modules": {"layers.9.self_attn.to_q": {"rank": 4, "in_features": 64,
                                                                                   "out_features": 64}}},
    "no modules": lambda d: {k: v for k, v in d.items() if k != "modules"},
}


@pytest.mark.parametrize("edit", RANK_MAPS)
def test_an_edited_rank_map_is_one_line_naming_the_option(demo, edit, tmp_path):
    path = tmp_path / "estimate.json"
    path.write_text(json.dumps(RANK_MAPS[edit](estimate(demo))))
    with pytest.raises(ConfigError, match=r"^adapter.rank_map: .*estimate.json") as err:
        read_rank_map(str(path), demo.model.arch)
    assert len(str(err.value).splitlines()) == 1


def test_an_untouched_rank_map_reads(demo, tmp_path):
    path = tmp_path / "estimate.json"
    path.write_text(json.dumps(estimate(demo)))
    assert read_rank_map(str(path), demo.model.arch).trained == {"layers.0.self_attn.to_q": 4, "layers.1.mlp.up_proj": 4}


@pytest.mark.parametrize("backend", ["_native_cudnn", "_native_flash", "_native_efficient", "flex", "flash", "xformers"])
def test_a_gpu_attention_kernel_on_the_cpu_is_one_line_naming_what_works(backend):
    with pytest.raises(ConfigError, match=f"^trainer.attention_backend={backend}: runs on CUDA GPUs only; on this cpu "
                                          "device use auto, native or _native_math$"):
        fast_paths.attention_backend(backend, torch.device("cpu"), torch.float32)
    assert fast_paths.attention_backend("_native_math", torch.device("cpu"), torch.float32) == "_native_math"


def test_an_unknown_compile_backend_is_refused_when_compiling():
    with pytest.raises(ConfigError, match="^trainer.compile_backend: 'bogus' is not a torch.compile backend"):
        fast_paths.check_compile_backend("blocks", "bogus")
    fast_paths.check_compile_backend("blocks", "aot_eager")
    fast_paths.check_compile_backend("false", "bogus")  # not compiling: dynamo is not even imported
