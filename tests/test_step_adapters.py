"""Every step you can hear, you can keep (issue 29.9): each round of samples keeps a loadable adapter at
`<run>/adapters/step-N/`, whatever `trainer.keep_checkpoints` prunes, the report's players link to its files, and
the setup summary says what they cost on disk."""

import json
import re
from urllib.parse import unquote

import pytest
import torch
from peft import get_peft_model_state_dict
from safetensors.torch import load_file

from sidestep.config import settled_config
from sidestep.models.source import model_source
from sidestep.report_pages.run_page import write_run_page
from sidestep.report_pages.runs import read_run
from sidestep.sizes import binary_size
from sidestep.train import train_adapter
from sidestep.training.checkpoint import LORA_FILE
from sidestep.training.setup import set_up_run
from tests.helpers.configs import compose_cfg

SAMPLED = ("trainer.max_steps=4", "sample.every_n_steps=2", "sample.duration=1", "sample.count=1", "sample.steps=2",
           "run.name=jazz")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cache_dir):
    """The same demo twice: sampling every 2 steps keeping 1 checkpoint, and without samples keeping every
    checkpoint (sampling leaves training alone, so its checkpoints hold the weights of each step)."""
    root = tmp_path_factory.mktemp("step-adapters")
    sampled = compose_cfg(cache_dir, *SAMPLED, "trainer.save_every_steps=2", "trainer.keep_checkpoints=1")
    train_adapter(sampled, root / "sampled")
    plain = compose_cfg(cache_dir, "trainer.max_steps=4", "trainer.save_every_steps=2", "trainer.keep_checkpoints=2")
    train_adapter(plain, root / "plain")
    return sampled, root / "sampled", root / "plain"


def loaded_by_diffusers(cfg, folder):
    """The adapter of `folder` as diffusers' own loader puts it on a fresh DiT."""
    transformer = model_source(cfg.model).dit().transformer
    transformer.load_lora_adapter(str(folder), weight_name="adapter_model.safetensors", prefix=None)
    return get_peft_model_state_dict(transformer, adapter_name=transformer.active_adapters()[0])


def test_each_sampled_step_keeps_one_adapter_equal_to_that_steps_weights(runs):
    cfg, run, plain = runs
    sampled = sorted(p.name for p in (run / "samples").iterdir())
    assert sampled == ["step-0000002", "step-0000004"]
    assert sorted(p.name for p in (run / "adapters").iterdir()) == sampled
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-0000004"]  # pruning left the adapters alone
    for folder in sampled:
        step = int(folder[5:])
        kept = run / "adapters" / folder
        formats = json.loads((kept / "formats.json").read_text())
        assert formats["comfyui"]["path"] == f"comfyui/jazz-step{step}.safetensors"
        assert all((kept / entry["path"]).exists() for entry in formats.values())
        trained = load_file(plain / "checkpoints" / folder / LORA_FILE)
        loaded = loaded_by_diffusers(cfg, kept)
        assert loaded.keys() == trained.keys()
        assert all(torch.equal(loaded[k], trained[k]) for k in trained), folder
    final = load_file(run / "adapter" / "adapter_model.safetensors")
    last = load_file(run / "adapters" / "step-0000004" / "adapter_model.safetensors")
    assert all(torch.equal(final[k], last[k]) for k in final)


def test_the_report_links_each_players_step_adapter_files(runs):
    _, run, _ = runs
    page = write_run_page(read_run(run, run.parent)).read_text()
    links = re.findall(r'<a href="(adapters/[^"]+)"', page)
    assert {link.split("/")[1] for link in links} == {"step-0000002", "step-0000004"}
    assert all((run / link).is_file() for link in links)
    assert "adapters/step-0000002/comfyui/jazz-step2.safetensors" in links
    assert "adapters/step-0000004/README.md" in links
    card = run / "adapters" / "step-0000002" / "README.md"
    heard = re.findall(r"\[listen\]\(([^)]+)\)", card.read_text())  # the card's links to the step's own samples
    assert [(card.parent / unquote(link)).resolve() for link in heard] == sorted(
        (run / "samples" / "step-0000002").glob("*.wav"))


def test_the_summary_says_what_the_step_adapters_take_on_disk(make_cfg, tmp_path):
    cfg = make_cfg(*SAMPLED)
    cfg, model = settled_config(cfg)
    with set_up_run(cfg, tmp_path, model) as run:
        plan = run.plan
    copies = 4  # LoRA: Side-Step's own file (diffusers'), the pipeline's, ACE-Step's and ComfyUI's
    assert plan.step_adapters.startswith("2 in adapters/")
    assert plan.step_adapters.endswith(binary_size(2 * copies * plan.file_bytes))
    cfg, model = settled_config(make_cfg("trainer.max_steps=4"))
    with set_up_run(cfg, tmp_path / "off", model) as run:
        assert run.plan.step_adapters.startswith("none")
