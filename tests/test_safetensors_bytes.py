"""An export is the same file every time: safetensors writes its header's metadata from a hash map whose order
changes between calls, so Side-Step writes it in key order (and the file still loads everywhere)."""

import json

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from sidestep.atomic import save_safetensors

METADATA = {f"ss_key_{i}": f"value {i} é\n\"quoted\"" for i in range(12)}


def test_the_same_tensors_and_metadata_give_the_same_bytes_in_key_order(tmp_path):
    tensors = {"b.lora_B.weight": torch.arange(6.0).reshape(2, 3), "a.lora_A.weight": torch.ones(3, 2).bfloat16()}
    files = [tmp_path / f"{i}.safetensors" for i in range(4)]
    for path in files:
        save_safetensors(tensors, path, metadata=METADATA)
    data = files[0].read_bytes()
    assert all(path.read_bytes() == data for path in files[1:])
    size = int.from_bytes(data[:8], "little")
    assert size % 8 == 0
    assert list(json.loads(data[8:8 + size])["__metadata__"]) == sorted(METADATA)
    loaded = load_file(files[0])
    assert all(torch.equal(loaded[k], v) for k, v in tensors.items())
    with safe_open(files[0], "pt") as f:
        assert f.metadata() == METADATA
