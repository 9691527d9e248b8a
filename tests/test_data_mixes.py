"""`data.datasets`: several folders of samples, each seen `repeats` times an epoch (your songs x3 beside a generic
set x1). Every sample is seen exactly its repeats an epoch, bucketing included; each folder is held out in
proportion and its samples stay identified; a resume with another mix is refused; one folder is as before."""

import json
import math
from collections import Counter

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from sidestep.config import SyntheticConfig, as_container
from sidestep.config.checks import typed
from sidestep.config.saved import saved_text
from sidestep.data.loader import make_loader, open_dataset
from sidestep.data.samples import sample_shape
from sidestep.data.synthetic import synthetic_dataset
from sidestep.errors import ConfigError, DataError
from sidestep.models.source import model_source
from sidestep.report_pages.run_page import write_run_page
from sidestep.report_pages.runs import read_run
from sidestep.train import train_adapter
from sidestep.training.fingerprint import fingerprint, mismatches
from sidestep.training.plan import schedule_lengths

SONGS, GENERIC = 3, 1  # repeats


@pytest.fixture(scope="module")
def folders(tmp_path_factory, cache_dir):
    """Two folders of preprocessed samples of different lengths: 'songs' (8 of 1.2 s) and 'generic' (4 of 2 s)."""
    from tests.conftest import compose_cfg

    shape = sample_shape(compose_cfg(cache_dir).model)
    root = tmp_path_factory.mktemp("mix")
    songs = synthetic_dataset(SyntheticConfig(num_samples=8, seconds=1.2, cache_dir=str(root)), shape)
    generic = synthetic_dataset(SyntheticConfig(num_samples=4, seconds=2.0, seed=1, cache_dir=str(root)), shape)
    return songs, generic


def mix(folders, songs=SONGS, generic=GENERIC):
    a, b = folders
    return (f"data.datasets=[{{dir:'{a}',repeats:{songs},name:songs}},{{dir:'{b}',repeats:{generic},name:generic}}]",)


def tensors(*overrides):
    return ("data=tensors", "trainer.max_steps=2", "sample.every_n_epochs=null", *overrides)


def epoch_names(loader, sampler, epoch):
    sampler.set_epoch(epoch)
    batches = [batch["names"] for batch in loader]
    return Counter(n for names in batches for n in names), [len(names) for names in batches]


@pytest.mark.parametrize("bucketed", [True, False])
def test_every_sample_is_seen_exactly_its_repeats_each_epoch(make_cfg, folders, bucketed):
    crop = () if bucketed else ("data.crop_seconds=1.0",)  # whole songs of two lengths are bucketed by length
    cfg = make_cfg(*tensors(*mix(folders), "trainer.batch_size=4", *crop))
    dataset = open_dataset(cfg)
    loader, sampler = make_loader(cfg, dataset, "cpu")
    planned = {f"songs/{f.name}": SONGS for f in dataset.files[:8]} | {f"generic/{f.name}": GENERIC
                                                                       for f in dataset.files[8:]}
    assert len(planned) == 12
    orders = []
    for epoch in range(3):
        counts, sizes = epoch_names(loader, sampler, epoch)
        assert counts == planned, f"epoch {epoch}"
        assert all(size == 4 for size in sizes[:-1]) and sum(sizes) == 8 * SONGS + 4 * GENERIC
        orders.append(list(sampler))
    assert orders[0] != orders[1]  # a fresh draw each epoch
    per_epoch = math.ceil((8 * SONGS + 4 * GENERIC) / 4)
    assert len(loader) == per_epoch and schedule_lengths(cfg.trainer, len(loader), 1)[0] == per_epoch


def test_held_out_per_folder_and_each_sample_knows_its_folder(make_cfg, folders):
    cfg = make_cfg(*tensors(*mix(folders), "data.val_fraction=0.25"))
    train, held_out = open_dataset(cfg).split(0.25, cfg.trainer.seed)
    assert held_out.counts() == [2, 1] and train.counts() == [6, 3]  # 25% of each folder, not of the whole
    assert [held_out.folders[o] for o in held_out.origin] == ["songs", "songs", "generic"]
    assert held_out.repeats == [1, 1, 1]  # scored once each, whatever the folder's repeats
    assert [held_out.sample_name(i).split("/")[0] for i in range(3)] == ["songs", "songs", "generic"]
    assert not set(held_out.files) & set(train.files)
    loader, sampler = make_loader(cfg, train, "cpu")
    counts, _ = epoch_names(loader, sampler, 0)
    assert set(counts.values()) == {SONGS, GENERIC} and sum(counts.values()) == 6 * SONGS + 3 * GENERIC


def test_a_folder_the_held_out_share_would_empty_is_named(make_cfg, folders, tmp_path):
    one = synthetic_dataset(SyntheticConfig(num_samples=1, seconds=1.2, cache_dir=str(tmp_path)),
                            sample_shape(make_cfg().model))
    cfg = make_cfg(*tensors(f"data.datasets=[{{dir:'{folders[0]}'}},{{dir:'{one}',name:tiny}}]"))
    with pytest.raises(DataError, match=r"leaves no training sample of 1 in tiny \(data.datasets\[1\]\)"):
        open_dataset(cfg).split(0.25, 0)


def test_a_resume_with_another_mix_is_refused(make_cfg, folders):
    def print_of(*overrides):
        cfg = make_cfg(*tensors(*overrides))
        return fingerprint(cfg, model_source(cfg.model), open_dataset(cfg))

    same = print_of(*mix(folders))
    assert mismatches(same, print_of(*mix(folders))) == []
    changed = mismatches(same, print_of(*mix(folders, songs=2)))
    assert [line.split(":")[0] for line in changed] == ["dataset", "data.mix"]
    assert "songs x3: 8 samples" in changed[1] and "songs x2: 8 samples" in changed[1]
    alone = print_of(f"data.datasets=[{{dir:'{folders[0]}',repeats:4}}]")  # the songs alone, x4 ...
    plain = print_of(f"data.dataset_dir={folders[0]}")  # ... are not the songs once
    assert [line.split(":")[0] for line in mismatches(alone, plain)] == ["dataset"]


@pytest.mark.parametrize("overrides, key", [
    (lambda f: [f"data.datasets=[{{dir:'{f[0]}'}},{{dir:'{f[0]}/nope'}}]"], "data.datasets[1].dir: "),
    (lambda f: [f"data.datasets=[{{dir:'{f[0]}',repeats:0}}]"], "data.datasets[0].repeats: must be at least 1"),
    (lambda f: [*mix(f), f"data.dataset_dir={f[0]}"], "data.datasets: give data.dataset_dir (one folder) or"),
    (lambda f: [*mix(f), f"preprocess.audio_dir={f[0]}"], "data.datasets: preprocess.audio_dir makes one folder"),
    (lambda f: [f"data.datasets=[{{dir:'{f[0]}',name:a}},{{dir:'{f[1]}',name:a}}]"], "data.datasets[1].name: 'a' "),
    (lambda f: ["data.datasets=[]"], "data.dataset_dir: is not set"),
])
def test_a_wrong_mix_is_one_line_naming_the_option(make_cfg, folders, overrides, key):
    with pytest.raises(ConfigError) as err:
        make_cfg("data=tensors", *overrides(folders))
    assert str(err.value).startswith(key) and "\n" not in str(err.value)


def test_one_folder_draws_its_held_out_set_and_order_as_before(make_cfg, folders):
    """The formulas of one folder before mixes existed: a held-out draw of `randperm(n, seed)`, and an epoch's
    order `randperm(n, seed + epoch)` (unbucketed), so one folder's runs stay bit-identical to earlier ones."""
    cfg = make_cfg(*tensors(f"data.dataset_dir={folders[0]}", "data.crop_seconds=1.0", "trainer.batch_size=2"))
    dataset = open_dataset(cfg)
    train, held_out = dataset.split(0.25, 42)
    old = torch.randperm(8, generator=torch.Generator().manual_seed(42)).tolist()
    assert held_out.files == [dataset.files[i] for i in sorted(old[:2])]
    assert train.files == [dataset.files[i] for i in sorted(old[2:])]
    _, sampler = make_loader(cfg, train, "cpu")
    sampler.set_epoch(3)
    assert [i for _, i in sampler] == torch.randperm(6, generator=torch.Generator().manual_seed(cfg.trainer.seed + 3)).tolist()


def test_one_folder_as_a_mix_of_one_trains_bit_identically(make_cfg, folders, tmp_path):
    common = tensors("data.val_fraction=0.25", "trainer.batch_size=2")
    train_adapter(make_cfg(*common, f"data.dataset_dir={folders[0]}"), tmp_path / "dir")
    train_adapter(make_cfg(*common, f"data.datasets=[{{dir:'{folders[0]}'}}]"), tmp_path / "list")
    a, b = (load_file(tmp_path / run / "adapter" / "adapter_model.safetensors") for run in ("dir", "list"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not (tmp_path / "dir" / "mix.json").exists()


def test_a_mix_trains_and_the_summary_and_report_count_each_folder(make_cfg, folders, tmp_path, capsys):
    cfg = make_cfg(*tensors(*mix(folders), "data.val_fraction=0.25", "trainer.batch_size=4",
                            "trainer.gradient_accumulation=1", "trainer.max_steps=null", "trainer.epochs=1"))
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text(saved_text(as_container(cfg)))
    result = train_adapter(cfg, tmp_path)
    summary = " ".join(capsys.readouterr().out.replace("│", " ").split())  # the table's wrapped cells as one text
    assert "songs: 6 x3 (+2 held out), generic: 3 x1 (+1 held out); 21 samples an epoch" in summary
    assert result.steps == math.ceil((6 * SONGS + 3 * GENERIC) / 4)  # one epoch of the repeated draw
    folders_json = json.loads((tmp_path / "mix.json").read_text())["folders"]
    assert [(f["name"], f["repeats"], f["samples"], f["held_out"]) for f in folders_json] == [
        ("songs", SONGS, 6, 2), ("generic", GENERIC, 3, 1)]
    page = write_run_page(read_run(tmp_path, tmp_path)).read_text()
    assert "songs x3 + generic x1, 0.25 held out; songs: 6 samples x3 (+2 held out), generic: 3 samples x1 (+1 held out)" in page


@pytest.mark.parametrize("source, stale", [("tensors", "synthetic"), ("synthetic", "dataset_dir")])
def test_a_config_saved_before_data_sources_had_schemas_still_reads(make_cfg, folders, source, stale):
    """Runs saved every data key in one schema (`data.synthetic: null` beside a folder); rerun and resume read them."""
    data = ("data=tensors", f"data.dataset_dir={folders[0]}") if source == "tensors" else ()
    saved = as_container(make_cfg(*data))
    saved["data"][stale] = None
    assert stale not in typed(OmegaConf.create(saved)).data
