"""Sample files are read safely and checked against the model; batches are cut without padding."""

import json
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from sidestep.data.collate import CropCollate
from sidestep.data.dataset import LatentDataset, list_sample_files
from sidestep.data.sampler import EpochSampler
from sidestep.data.samples import check_sample, read_sample
from sidestep.errors import DataError
from tests.helpers.samples import SHAPE, sample, write_pt


def test_reads_ace_step_pt_samples_in_bf16(tmp_path):
    path = write_pt(tmp_path / "a.pt", sample(dtype=torch.bfloat16))
    s = read_sample(path)
    check_sample(path, s, SHAPE)
    assert s["target_latents"].dtype == torch.float32 and s["metadata"]["caption"] == "jazz"


def test_reads_safetensors_samples_with_header_metadata(tmp_path):
    data = sample()
    meta = data.pop("metadata")
    save_file(data, tmp_path / "a.safetensors", metadata={"sidestep_metadata": json.dumps(meta)})
    s = read_sample(tmp_path / "a.safetensors")
    assert s["metadata"] == meta and torch.equal(s["target_latents"], data["target_latents"])


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_a_pickle_payload_is_refused_and_never_runs(tmp_path):
    marker = str(tmp_path / "pwned")
    data = sample()
    data["metadata"] = Payload(marker)
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        torch.save(data, f, pickle_module=pickle)
    with pytest.raises(DataError, match="evil.pt: refused to load"):
        read_sample(path)
    assert not os.path.exists(marker)


@pytest.mark.parametrize("change, message", [
    (lambda s: s.pop("context_latents"), "missing context_latents"),
    (lambda s: s.update(target_latents=torch.randn(50, 32)), r"target_latents has shape \[50, 32\]"),
    (lambda s: s.update(attention_mask=torch.ones(49)), "attention_mask has shape"),
    (lambda s: s.update(context_latents=torch.randn(50, 64)), "context_latents has shape"),
    (lambda s: s.update(encoder_hidden_states=torch.randn(7, 2048)), "encoder_hidden_states has shape .* for this model"),
    (lambda s: s.update(encoder_attention_mask=torch.ones(3)), "encoder_attention_mask has shape"),
    (lambda s: s["target_latents"].__setitem__((0, 0), float("nan")), "target_latents contains NaN"),
    (lambda s: s.update(target_latents=[1, 2, 3]), "target_latents is a list, not a tensor"),
])
def test_wrong_keys_shapes_and_values_name_the_file(tmp_path, change, message):
    data = sample()
    change(data)
    path = write_pt(tmp_path / "bad.pt", data)
    with pytest.raises(DataError, match=f"bad.pt: {message}"):
        check_sample(path, read_sample(path), SHAPE)


def test_truncated_empty_and_too_short_files(tmp_path):
    good = write_pt(tmp_path / "good.pt", sample())
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[:200])
    with pytest.raises(DataError, match="cut.pt: unreadable"):
        read_sample(tmp_path / "cut.pt")
    (tmp_path / "empty.safetensors").write_bytes(b"")
    with pytest.raises(DataError, match="empty.safetensors: empty file"):
        read_sample(tmp_path / "empty.safetensors")
    short = write_pt(tmp_path / "short.pt", sample(frames=1))
    with pytest.raises(DataError, match="short.pt: only 1 latent frames"):
        check_sample(short, read_sample(short), SHAPE)


def test_dataset_folder_scan_and_manifest(tmp_path):
    for name in ("b.pt", "a.pt", "c.tmp.pt"):
        write_pt(tmp_path / name, sample())
    (tmp_path / "notes.txt").write_text("not a sample")
    assert [p.name for p in list_sample_files(tmp_path)] == ["a.pt", "b.pt"]
    (tmp_path / "manifest.json").write_text(json.dumps({"samples": ["b.pt"]}))
    assert [p.name for p in list_sample_files(tmp_path)] == ["b.pt"]
    (tmp_path / "manifest.json").write_text(json.dumps({"samples": ["b.pt", "gone.pt"]}))
    with pytest.raises(DataError, match="manifest.json: lists 1 missing file"):
        list_sample_files(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no .pt or .safetensors samples"):
        list_sample_files(empty)


def test_opening_a_dataset_checks_every_file(tmp_path):
    write_pt(tmp_path / "a.pt", sample())
    write_pt(tmp_path / "b.pt", sample(width=2048))
    with pytest.raises(DataError, match="b.pt: encoder_hidden_states"):
        LatentDataset(tmp_path, SHAPE)


def items(lengths, epoch=0):
    out = []
    for i, n in enumerate(lengths):
        s = sample(frames=n, tokens=3 + i)
        s.update(epoch=epoch, index=i, name=f"{i}.pt")
        out.append(s)
    return out


def test_collate_crops_long_samples_to_one_length_without_padding():
    batch = CropCollate(seed=0, crop_frames=40, patch_size=2)(items([100, 73, 61]))
    assert batch["target_latents"].shape == (3, 40, 64) and batch["context_latents"].shape == (3, 40, 128)
    assert batch["attention_mask"].all()
    assert batch["encoder_hidden_states"].shape == (3, 5, 64)
    assert batch["encoder_attention_mask"].tolist()[0] == [True, True, True, False, False]


def test_collate_pads_and_masks_short_samples():
    batch = CropCollate(seed=0, crop_frames=None, patch_size=2)(items([30, 21]))
    assert batch["target_latents"].shape[1] == 30
    assert batch["attention_mask"][1].sum() == 21 and not batch["attention_mask"][1, 21:].any()
    assert batch["target_latents"][1, 21:].abs().sum() == 0


def test_crop_offsets_depend_on_seed_epoch_and_sample_only():
    def first_frame(seed, epoch):
        torch.manual_seed(123)
        its = items([200], epoch)
        torch.manual_seed(0)
        its[0]["target_latents"] = torch.arange(200.0)[:, None].expand(200, 64)
        return CropCollate(seed=seed, crop_frames=20, patch_size=2)(its)["target_latents"][0, 0, 0].item()

    assert first_frame(0, 0) == first_frame(0, 0)
    assert len({first_frame(0, e) for e in range(6)}) > 1


def test_epoch_sampler_is_a_seeded_permutation_per_epoch():
    sampler = EpochSampler(10, seed=3)
    orders = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        keys = list(sampler)
        assert {e for e, _ in keys} == {epoch} and sorted(i for _, i in keys) == list(range(10))
        orders.append([i for _, i in keys])
    assert orders[0] != orders[1]
    sampler.set_epoch(1)
    assert [i for _, i in sampler] == orders[1]


def test_all_problems_are_reported_together_and_skip_trains_on_the_rest(tmp_path, caplog):
    write_pt(tmp_path / "good.pt", sample())
    write_pt(tmp_path / "nan.pt", {**sample(), "target_latents": torch.full((50, 64), float("nan"))})
    (tmp_path / "zero.pt").write_bytes(b"")
    with pytest.raises(DataError) as err:
        LatentDataset(tmp_path, SHAPE)
    lines = str(err.value).splitlines()
    assert lines[0].startswith("2 unusable sample files in") and "data.on_bad_sample=skip" in lines[0]
    assert any("nan.pt: target_latents contains NaN" in line for line in lines)
    assert any("zero.pt: empty file" in line for line in lines)
    caplog.set_level("WARNING")
    dataset = LatentDataset(tmp_path, SHAPE, on_bad_sample="skip")
    assert [p.name for p in dataset.files] == ["good.pt"] and "skipping 2 unusable sample file(s) of 3" in caplog.text
    (tmp_path / "good.pt").unlink()
    with pytest.raises(DataError):
        LatentDataset(tmp_path, SHAPE, on_bad_sample="skip")  # nothing usable left is always an error


def test_a_manifest_listing_a_file_twice_is_refused(tmp_path):
    write_pt(tmp_path / "a.pt", sample())
    (tmp_path / "manifest.json").write_text(json.dumps({"samples": ["a.pt", "a.pt"]}))
    with pytest.raises(DataError, match="manifest.json: lists .*a.pt more than once"):
        list_sample_files(tmp_path)


def hostile(folder, kind):
    """A dataset folder with one good sample and one hostile entry of `kind`; returns the entry's printed name."""
    write_pt(folder / "good.pt", sample())
    outside = folder.parent / "outside.pt"
    if kind == "dangling symlink":
        (folder / "gone.pt").symlink_to(folder / "nowhere.pt")
        return "gone.pt: a broken symlink"
    if kind == "symlink loop":
        (folder / "loop.pt").symlink_to(folder / "loop.pt")
        return "loop.pt: a symlink loop"
    if kind == "non-UTF-8 name":
        write_pt(os.fsdecode(bytes(folder) + b"/caf\xe9.pt"), sample())
        return "caf\ufffd.pt: the file name is not valid UTF-8"
    if kind.startswith("manifest"):
        write_pt(outside, sample())
        (folder / "link.pt").symlink_to(outside)
        entry = {"manifest ../": "../outside.pt", "manifest absolute": str(outside), "manifest symlink": "link.pt"}[kind]
        (folder / "manifest.json").write_text(json.dumps({"samples": ["good.pt", entry]}))
        return "leads outside the dataset folder"
    data = sample()
    if kind == "no audio frame":
        data["attention_mask"] = torch.zeros(50)
    elif kind == "no text":
        data["encoder_attention_mask"] = torch.zeros(7, dtype=torch.bool)
    elif kind == "absurd latents":
        data["target_latents"] = data["target_latents"] * 1e6
    write_pt(folder / "bad.pt", data)
    return {"no audio frame": "bad.pt: attention_mask is all false", "no text": "bad.pt: encoder_attention_mask is all false",
            "absurd latents": "bad.pt: target_latents reaches"}[kind]


@pytest.mark.parametrize("kind", ["dangling symlink", "symlink loop", "non-UTF-8 name", "manifest ../",
                                  "manifest absolute", "manifest symlink", "no audio frame", "no text", "absurd latents"])
def test_hostile_dataset_entries_are_named_before_any_model_or_skipped(tmp_path, kind):
    folder = tmp_path / "data"
    folder.mkdir()
    problem = hostile(folder, kind)
    with pytest.raises(DataError) as err:
        LatentDataset(folder, SHAPE)
    assert problem in str(err.value) and len(str(err.value).splitlines()) == 1
    str(err.value).encode("utf-8")  # printable on any console
    assert [p.name for p in LatentDataset(folder, SHAPE, on_bad_sample="skip").files] == ["good.pt"]


def test_nothing_outside_the_folder_is_read_through_a_manifest(tmp_path, monkeypatch):
    folder = tmp_path / "data"
    folder.mkdir()
    hostile(folder, "manifest ../")
    opened = []
    real = torch.load
    monkeypatch.setattr(torch, "load", lambda path, *a, **k: opened.append(str(path)) or real(path, *a, **k))
    LatentDataset(folder, SHAPE, on_bad_sample="skip")
    assert opened == [str(folder / "good.pt")]


@pytest.mark.parametrize("samples", [[1, 2], "good.pt", [["good.pt"]], [""]])
def test_a_manifest_whose_samples_are_not_file_names_is_refused(tmp_path, samples):
    write_pt(tmp_path / "good.pt", sample())
    (tmp_path / "manifest.json").write_text(json.dumps({"samples": samples}))
    with pytest.raises(DataError, match="manifest.json: 'samples' must be a list of file names"):
        list_sample_files(tmp_path)


def test_a_run_stops_its_loader_workers_when_it_ends(make_cfg, tmp_path):
    """Persistent workers left to the garbage collector cost 5 s each (their queues are finalized first, so the stop
    never reaches them and PyTorch waits out its join timeout): a sweep of jobs in one process paid it every job."""
    import multiprocessing

    from sidestep.data.loader import dataset_folder
    from sidestep.train import train_adapter

    folder = dataset_folder(make_cfg())
    cfg = make_cfg("data=tensors", f"data.dataset_dir={folder}", "data.num_workers=1", "data.persistent_workers=true",
                   "data.val_fraction=0.25", "trainer.max_steps=3", "sample.every_n_epochs=null")
    before = set(multiprocessing.active_children())
    assert train_adapter(cfg, tmp_path / "run").steps == 3
    assert set(multiprocessing.active_children()) - before == set()  # the training and held-out loaders' workers
