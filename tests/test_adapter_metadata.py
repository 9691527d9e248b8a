"""The adapter says what it is (issue 29.10): every exported safetensors file carries the run's training facts in
its header (kohya's `ss_*` names where one fits), and a model card sits beside it, its user text escaped."""

import json
import math
from importlib.metadata import version

import pytest
from markdown_it import MarkdownIt
from omegaconf import OmegaConf
from safetensors import safe_open

from sidestep import export
from sidestep.adapters.attach import adapter_config, add_adapter, save_adapter
from sidestep.config import as_container, resolve
from sidestep.data.loader import dataset_folder, open_dataset
from sidestep.models.source import model_source
from sidestep.train import train_adapter
from sidestep.training.adapter_facts import trigger_tag
from tests.conftest import compose_cfg, randomize_lora

STEPS = 3


@pytest.fixture(scope="module")
def run(tmp_path_factory, cache_dir):
    """The demo for 3 steps, a checkpoint at each, its saved config as Hydra leaves it."""
    cfg = compose_cfg(cache_dir, f"trainer.max_steps={STEPS}", "trainer.save_every_steps=1", "run.name=jazz")
    run_dir = tmp_path_factory.mktemp("metadata") / "run"
    train_adapter(cfg, run_dir)
    (run_dir / ".hydra").mkdir()
    (run_dir / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(as_container(resolve(cfg))))
    return cfg, run_dir


def headers(folder):
    """{file relative to folder: its header} for every safetensors file an adapter folder holds."""
    found = {}
    for path in sorted(folder.rglob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            found[path.relative_to(folder).as_posix()] = f.metadata()
    return found


def expected_facts(cfg, folder, step):
    """What the demo's files must say, worked out from the data, the model and the saved adapter config."""
    train, _ = open_dataset(cfg).split(cfg.data.val_fraction, cfg.trainer.seed)
    per_epoch = math.ceil(len(train) / cfg.trainer.batch_size)
    config = json.loads((folder / "adapter_config.json").read_text())
    return {"ss_network_dim": str(config["r"]), "ss_network_alpha": f"{config['lora_alpha']:g}",
            "ss_steps": str(step), "ss_epoch": str(math.ceil(step / per_epoch)),
            "ss_num_train_images": str(len(train)), "sidestep_dataset_minutes": f"{train.seconds / 60:.1f}",
            "ss_dataset_dirs": json.dumps({dataset_folder(cfg).name: {"n_repeats": 1, "img_count": len(train)}}),
            "ss_base_model_version": "acestep-v15-tiny",
            "sidestep_base_model_digest": model_source(cfg.model).weights_digest(),
            "ss_optimizer": cfg.optimizer._target_, "ss_learning_rate": f"{cfg.optimizer.lr:g}",
            "sidestep_version": version("sidestep")}


def test_every_formats_file_carries_the_training_facts(run):
    cfg, run_dir = run
    adapter = run_dir / "adapter"
    found = headers(adapter)
    assert set(found) == {"adapter_model.safetensors", "diffusers_pipeline/pytorch_lora_weights.safetensors",
                          "acestep/jazz/adapter_model.safetensors", "comfyui/jazz.safetensors"}
    expected = expected_facts(cfg, adapter, STEPS)
    for path, header in found.items():
        assert {k: header.get(k) for k in expected} == expected, path
        assert header["ss_output_name"] == "jazz", path
        assert "sidestep_trigger_tag" not in header  # the demo's captions carry none
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert json.loads(found["adapter_model.safetensors"]["lora_adapter_metadata"]) == config  # diffusers' own key


def test_an_exported_checkpoint_says_its_own_step(run):
    cfg, run_dir = run
    export.main([str(run_dir / "checkpoints" / "step-0000002")])
    out = run_dir / "adapters" / "step-0000002"
    expected = expected_facts(cfg, out, 2)
    for path, header in headers(out).items():
        assert {k: header.get(k) for k in expected} == expected, path
        assert header["ss_output_name"] == "jazz-step2"


def test_the_trigger_tag_is_the_one_preprocessing_added(tmp_path):
    record = tmp_path / "tensors" / ".preprocess" / "2026-11-24_10-00-00-000000" / ".hydra" / "config.yaml"
    record.parent.mkdir(parents=True)
    record.write_text("audio_dir: ./songs\ntrigger_tag: jzz\n")
    assert trigger_tag(OmegaConf.create({"data": {"dataset_dir": str(tmp_path / "tensors")}})) == "jzz"
    in_run = {"preprocess": {"audio_dir": "./songs", "trigger_tag": "lofi"}, "data": {"dataset_dir": None}}
    assert trigger_tag(OmegaConf.create(in_run)) == "lofi"


def trained(make_cfg):
    cfg = make_cfg("adapter.rank=4", "adapter.alpha=8")
    dit = model_source(cfg.model).dit()
    add_adapter(dit.transformer, adapter_config(cfg), seed=0)
    return randomize_lora(dit.transformer)


def test_the_card_names_the_trigger_tag_and_prompts_and_escapes_what_users_wrote(make_cfg, tmp_path):
    facts = {"sidestep_trigger_tag": "jzz", "modelspec.trigger_phrase": "jzz", "ss_num_train_images": "12",
             "ss_dataset_dirs": json.dumps({"<b>my</b> songs": {"n_repeats": 1, "img_count": 12}})}
    samples = [("<script>alert(1)</script> warm lofi", "../samples/step-0000004/0_warm.wav"),
               ("jzz, [click](javascript:alert(1)) jazz", "../samples/step-0000004/1_jazz.wav")]
    save_adapter(trained(make_cfg), tmp_path / "adapter", "jazz", "fp32", facts, samples)
    card = (tmp_path / "adapter" / "README.md").read_text()
    page = MarkdownIt("commonmark").enable("table").render(card)
    assert "<strong>jzz</strong>" in page  # the trigger tag, shown as the tag to type
    assert page.count("<script") == 0 and "&lt;script&gt;alert(1)&lt;/script&gt; warm lofi" in page
    assert "<b>" not in page and "&lt;b&gt;my&lt;/b&gt; songs" in page
    assert 'href="javascript' not in page and "[click](javascript:alert(1)) jazz" in page
    assert 'href="../samples/step-0000004/0_warm.wav"' in page and 'href="../samples/step-0000004/1_jazz.wav"' in page
    for header in headers(tmp_path / "adapter").values():
        assert header["modelspec.trigger_phrase"] == header["sidestep_trigger_tag"] == "jzz"


def test_an_adapter_written_twice_says_the_same(make_cfg, tmp_path):
    """No clock in a header or the card: the same weights and facts give the same files (safetensors itself
    writes a header's keys in no fixed order, so its files are compared by their tensors and header)."""
    model = trained(make_cfg)
    facts = {"ss_steps": "4", "sidestep_trigger_tag": "jzz"}
    for folder in ("one", "two"):
        save_adapter(model, tmp_path / folder, "jazz", "bf16", facts, [("warm lofi", "../x.wav")])
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file())
    assert len(files) == 8
    for name in files:
        one, two = tmp_path / "one" / name, tmp_path / "two" / name
        if name.suffix != ".safetensors":
            assert one.read_bytes() == two.read_bytes(), name
            continue
        with safe_open(str(one), framework="pt") as a, safe_open(str(two), framework="pt") as b:
            assert a.metadata() == b.metadata(), name
            assert a.keys() == b.keys() and all(a.get_tensor(k).equal(b.get_tensor(k)) for k in a.keys()), name
