"""A sample file someone sends you is data: every field that is not what a preprocessed sample holds is refused in one
line naming the file and the field, before any model loads; nothing in it allocates more than it stores."""

import json
import re
import struct

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file

from sidestep.config.parts import ArchConfig
from sidestep.data.dataset import LatentDataset, list_sample_files
from sidestep.data.samples import read_sample
from sidestep.errors import ConfigError, DataError
from tests.helpers.samples import SHAPE, sample, write_pt


def expanded(shape):
    return torch.randn(1, shape[1]).expand(*shape)


def edited(key, value):
    return lambda s: s.update({key: value})


def in_metadata(**fields):
    return lambda s: s["metadata"].update(fields)


PT_CASES = {
    "sparse target": (edited("target_latents", torch.randn(50, 64).to_sparse()), "target_latents is a sparse_coo tensor"),
    "sparse csr context": (edited("context_latents", torch.randn(50, 128).to_sparse_csr()), "context_latents is a sparse_csr"),
    "complex target": (edited("target_latents", torch.randn(50, 64, dtype=torch.complex64)), "target_latents holds complex"),
    "quantized text": (edited("encoder_hidden_states", torch.quantize_per_tensor(torch.randn(7, 64), 0.1, 0, torch.qint8)),
                       "encoder_hidden_states is quantized"),
    "meta target": (edited("target_latents", torch.empty(50, 64, device="meta")), "target_latents is a meta tensor"),
    "integer target": (edited("target_latents", torch.ones(50, 64, dtype=torch.int64)), "target_latents is int64, expected floating"),
    "bool context": (edited("context_latents", torch.ones(50, 128, dtype=torch.bool)), "context_latents is bool, expected floating"),
    "complex mask": (edited("attention_mask", torch.ones(50, dtype=torch.complex64)), "attention_mask holds complex"),
    "expanded target": (edited("target_latents", expanded((10 ** 6, 64))), r"target_latents repeats its stored values over shape \[1000000, 64\]"),
    "mask of halves": (edited("attention_mask", torch.full((50,), 0.5)), "attention_mask holds values other than 0 and 1"),
    "mask of NaN": (edited("encoder_attention_mask", torch.full((7,), float("nan"))), "encoder_attention_mask holds values other than 0 and 1"),
    "Inf context": (lambda s: s["context_latents"].__setitem__((3, 3), float("inf")), "context_latents contains NaN or Inf"),
    "scalar mask": (edited("attention_mask", torch.tensor(1.0)), r"attention_mask has shape \[\]"),
    "rank-3 target": (edited("target_latents", torch.randn(1, 50, 64)), r"target_latents has shape \[1, 50, 64\]"),
    "string target": (edited("target_latents", "latents"), "target_latents is a str, not a tensor"),
    "missing mask": (lambda s: s.pop("encoder_attention_mask"), "missing encoder_attention_mask"),
    "tensor metadata": (edited("metadata", torch.zeros(3)), "metadata is a Tensor, expected a mapping"),
    "list metadata": (edited("metadata", ["jazz"]), "metadata is a list, expected a mapping"),
    "string metadata": (edited("metadata", "jazz"), "metadata is a str, expected a mapping"),
    "numeric keys": (edited("metadata", {1: "jazz"}), "metadata is a dict, expected a mapping of names"),
    "list caption": (in_metadata(caption=["jazz"]), "metadata caption is a list, expected text"),
    "tensor lyrics": (in_metadata(lyrics=torch.zeros(2)), "metadata lyrics is a Tensor, expected text"),
    "word bpm": (in_metadata(bpm="fast"), "metadata bpm is 'fast', expected a number"),
    "NaN bpm": (in_metadata(bpm=float("nan")), "metadata bpm is nan, expected a number"),
}


@pytest.mark.parametrize("case", PT_CASES)
def test_a_hostile_pt_sample_is_named_in_one_line(tmp_path, case):
    change, message = PT_CASES[case]
    data = sample()
    change(data)
    folder = tmp_path / "data"
    folder.mkdir()
    write_pt(folder / "good.pt", sample())
    write_pt(folder / "bad.pt", data)
    with pytest.raises(DataError) as err:
        LatentDataset(folder, SHAPE)
    assert re.search(f"bad.pt: {message}", str(err.value)) and len(str(err.value).splitlines()) == 1, err.value
    assert [p.name for p in LatentDataset(folder, SHAPE, on_bad_sample="skip").files] == ["good.pt"]


def header_metadata(text):
    def write(path):
        data = sample()
        del data["metadata"]
        save_file(data, path, metadata={"sidestep_metadata": text})
    return write


def integer_latents(path):
    data = sample()
    del data["metadata"]
    data["target_latents"] = torch.ones(50, 64, dtype=torch.int32)
    save_file(data, path)


def lying_header(path):
    """A header that claims more rows than the file stores."""
    data = sample()
    del data["metadata"]
    save_file(data, path)
    raw = path.read_bytes()
    size = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + size])
    header["target_latents"]["shape"] = [5000, 64]
    text = json.dumps(header).encode().ljust(size)
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + size:])


SAFETENSORS_CASES = {
    "list metadata": (header_metadata('["jazz"]'), "metadata is a list, expected a mapping"),
    "string metadata": (header_metadata('"jazz"'), "metadata is a str, expected a mapping"),
    "number caption": (header_metadata('{"caption": 7}'), "metadata caption is a int, expected text"),
    "deeply nested metadata": (header_metadata("[" * 100000 + "]" * 100000), "metadata in the file header is not valid JSON (or nested too deeply)"),
    "integer latents": (integer_latents, "target_latents is int32, expected floating"),
    "header lies about a shape": (lying_header, "unreadable .safetensors file"),
}


@pytest.mark.parametrize("case", SAFETENSORS_CASES)
def test_a_hostile_safetensors_sample_is_named_in_one_line(tmp_path, case):
    write, message = SAFETENSORS_CASES[case]
    write(tmp_path / "bad.safetensors")
    with pytest.raises(DataError) as err:
        read_sample(tmp_path / "bad.safetensors")
    assert f"bad.safetensors: {message}" in str(err.value) and len(str(err.value).splitlines()) == 1, err.value


@pytest.mark.parametrize("manifest, message", [
    (json.dumps({"samples": ["good.pt\0../../etc/passwd"]}), "'samples' must be a list of file names"),
    ('{"samples": ' + "[" * 100000 + "]" * 100000 + "}", "not a manifest"),
    (" " * (17 << 20), "17 MiB, too large to be a list of sample names"),
])
def test_a_hostile_manifest_is_named_in_one_line(tmp_path, manifest, message):
    write_pt(tmp_path / "good.pt", sample())
    (tmp_path / "manifest.json").write_text(manifest)
    with pytest.raises(DataError) as err:
        list_sample_files(tmp_path)
    assert f"manifest.json: {message}" in str(err.value), err.value


def test_a_small_slice_of_a_huge_storage_is_read_alone(tmp_path, monkeypatch):
    """ACE-Step may save one row of a batch: the file holds the whole batch's storage. Only the slice is read (the
    file is memory-mapped) and kept (the copy owns just its own values)."""
    data = sample()
    data["target_latents"] = torch.randn(4000, 64)[:50]
    path = write_pt(tmp_path / "slice.pt", data)
    assert path.stat().st_size > 4000 * 64 * 4
    calls = []
    real = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(k) or real(*a, **k))
    read = read_sample(path)
    assert calls[0]["mmap"] is True
    assert torch.equal(read["target_latents"], data["target_latents"])
    assert read["target_latents"].untyped_storage().nbytes() == 50 * 64 * 4


def test_old_pickle_format_samples_still_read(tmp_path):
    data = sample()
    torch.save(data, tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    assert torch.equal(read_sample(tmp_path / "old.pt")["target_latents"], data["target_latents"])


def test_a_transposed_view_is_an_ordinary_sample(tmp_path):
    data = sample()
    data["context_latents"] = torch.randn(128, 50).T
    path = write_pt(tmp_path / "t.pt", data)
    read = read_sample(path)
    assert read["context_latents"].is_contiguous() and torch.equal(read["context_latents"], data["context_latents"])


def rank_map(**changes):
    from sidestep.adapters.rank_map import FORMAT

    module = {"rank": 8, "in_features": 64, "out_features": 64}
    data = {"format": FORMAT, "arch": OmegaConf.to_container(OmegaConf.structured(ArchConfig)),
            "modules": {"layers.0.self_attn.q_proj": module}}
    data.update(changes)
    return json.dumps(data)


@pytest.mark.parametrize("text", [
    rank_map(arch=["hidden_size"]),
    rank_map(modules={"layers.0.self_attn.q_proj": {"rank": -8, "in_features": 64, "out_features": 64}}),
    rank_map(modules={"layers.0.self_attn.q_proj": {"rank": 8, "in_features": 0, "out_features": 0}}),
    rank_map(modules=["layers.0.self_attn.q_proj"]),
    "[" * 100000 + "]" * 100000,
])
def test_a_hostile_rank_map_is_named_in_one_line(tmp_path, text):
    from sidestep.adapters.rank_map import read_rank_map

    (tmp_path / "estimate.json").write_text(text)
    with pytest.raises(ConfigError, match=r"^adapter\.rank_map: \S*estimate\.json[: ]") as refused:
        read_rank_map(str(tmp_path / "estimate.json"), OmegaConf.structured(ArchConfig))
    assert "\n" not in str(refused.value)
