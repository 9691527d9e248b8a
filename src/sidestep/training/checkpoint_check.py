"""Checking a checkpoint before anything of it is loaded, so a damaged one is named instead of trained on.

At save time `trainer_state.json` records the sha256 of every other file of the checkpoint and a digest of its
own contents. On resume: every listed file must be there with that content and no other file or symlink beside
them, the folder's step must be the state's, the state must parse with fields of the right types and sane counters,
every pickle must open under `weights_only=True` (as Accelerate will open it), and every tensor -- LoRA weights and
optimizer state -- must be finite. With the model built, the LoRA key set, shapes and dtypes must match it, and the
scheduler, generator and optimizer states must fit this run's (`restored_states.py`).
"""

import hashlib
import json
import logging
import math
import re
from pathlib import Path, PurePosixPath
from typing import Dict, Iterable

import torch
from accelerate.utils import load as accelerate_load
from safetensors import SafetensorError
from safetensors.torch import load_file

from sidestep.digest import file_hash
from sidestep.errors import SidestepError, first_line

log = logging.getLogger(__name__)
STATE_FILE, LORA_FILE = "trainer_state.json", "adapter_model.safetensors"
COUNTERS = ("step", "epoch", "batch_in_epoch", "skipped_nonfinite")
MAX_COUNTER = 1 << 40  # beyond any run; larger is an edit, and overflows the seeds derived from it
MAX_STATE_BYTES = 16 << 20  # counters, a schedule's state, a fingerprint and a digest per file: a few kB
STEP_FOLDER = re.compile(r"step-(\d+)")


class CheckpointError(SidestepError):
    """A checkpoint that cannot be used; the message names the file or the mismatching setting."""


def payload_digest(payload: dict) -> str:
    """sha256 of the state file's contents minus the digest itself, so a hand edit is noticed."""
    body = {k: v for k, v in payload.items() if k != "digest"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def file_digests(folder: Path, hashed: bool = True) -> Dict[str, str]:
    """{relative path: sha256} of every file of a checkpoint being written, the state file aside (`hashed=False`:
    the names only, with empty digests)."""
    return {p.relative_to(folder).as_posix(): file_hash(p) if hashed else "" for p in sorted(folder.rglob("*"))
            if p.is_file() and p.relative_to(folder).as_posix() != STATE_FILE}


def read_state(checkpoint: Path) -> dict:
    """The parsed, self-consistent `trainer_state.json`."""
    path = checkpoint / STATE_FILE

    def damaged(problem: str) -> CheckpointError:
        return CheckpointError(f"{path}: {problem}; the checkpoint is damaged, resume from another one")

    try:
        if path.stat().st_size > MAX_STATE_BYTES:
            raise ValueError(f"{path.stat().st_size >> 20} MiB, far more than a checkpoint's state")
        payload = json.loads(path.read_text())
        state = payload["state"]
        missing = {"fingerprint", "scheduler"} - set(payload)
        if missing:
            raise KeyError(missing.pop())
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as err:
        raise damaged(f"unreadable ({type(err).__name__}: {first_line(err)})") from None
    if ("digest" in payload) != ("files" in payload):  # written together since they exist: one alone is an edit
        raise damaged("has one of 'files' and 'digest' without the other")
    if "digest" in payload and payload["digest"] != payload_digest(payload):
        raise CheckpointError(f"{path}: edited after it was written (its digest no longer matches); "
                              "resume from another checkpoint")
    wrong = [k for k, kind in (("state", dict), ("fingerprint", dict), ("scheduler", dict), ("files", dict),
                               ("digest", str)) if k in payload and not isinstance(payload[k], kind)]
    if wrong or not all(isinstance(k, str) and isinstance(v, str) for k, v in payload.get("files", {}).items()):
        raise damaged(f"{wrong[0] if wrong else 'files'} is not what Side-Step writes there")
    bad = [k for k in COUNTERS if not isinstance(state.get(k), int) or isinstance(state.get(k), bool)
           or not 0 <= state[k] <= MAX_COUNTER]
    if bad or set(state) - {*COUNTERS, "smoothed_loss", "first_loss"}:
        raise damaged(f"counters are not whole numbers >= 0 ({', '.join(bad) or 'unknown fields'})")
    if state["epoch"] > state["step"] or state["skipped_nonfinite"] > state["step"]:
        raise damaged(f"counters disagree (epoch {state['epoch']} or skipped {state['skipped_nonfinite']} "
                      f"beyond step {state['step']})")
    for key in ("smoothed_loss", "first_loss"):
        value = state.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)):
            raise damaged(f"{key} is {value!r}, not a finite number")
    return payload


def verify(checkpoint: Path) -> dict:
    """Every check that needs no model. Returns the state payload."""
    payload = read_state(checkpoint)
    named = STEP_FOLDER.fullmatch(checkpoint.name)
    if named and int(named.group(1)) != payload["state"]["step"]:
        raise CheckpointError(f"{checkpoint / STATE_FILE}: is the state of step {payload['state']['step']}, not of "
                              f"{checkpoint.name} (moved or swapped between checkpoints); resume from another one")
    links = [p for p in [checkpoint, *checkpoint.rglob("*")] if p.is_symlink()]
    if links:
        raise CheckpointError(f"{links[0]}: a symlink (a checkpoint holds its own files, in its own folder); "
                              "resume from another one")
    listed = payload.get("files")
    if listed is None:
        log.warning("%s has no content digests (written by an older Side-Step); checking its tensors only", checkpoint)
    else:
        unlisted = sorted(set(file_digests(checkpoint, hashed=False)) - set(listed))
        if unlisted:
            raise CheckpointError(f"{checkpoint / unlisted[0]}: not part of the checkpoint as it was saved; "
                                  "remove it or resume from another checkpoint")
    for name, expected in (listed or {}).items():
        if PurePosixPath(name).is_absolute() or ".." in PurePosixPath(name).parts:
            raise CheckpointError(f"{checkpoint / STATE_FILE}: lists {name!r}, outside the checkpoint; "
                                  "resume from another one")
        path = checkpoint / name
        if not path.is_file():
            raise CheckpointError(f"{path}: missing from the checkpoint; resume from another one")
        if file_hash(path) != expected:
            raise CheckpointError(f"{path}: contents changed since it was saved (sha256 differs); "
                                  "resume from another checkpoint")
    _check_finite(checkpoint / LORA_FILE, read_tensors(checkpoint / LORA_FILE).items())
    for path in sorted([*checkpoint.glob("*.bin"), *checkpoint.glob("*.pkl")]):
        _check_finite(path, _tensors_in(_open_pickle(path)))
    return payload


def check_fits_model(checkpoint: Path, expected: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The checkpoint's LoRA tensors, if their names and shapes are exactly the model's."""
    path = checkpoint / LORA_FILE
    saved = read_tensors(path)
    missing, extra = sorted(set(expected) - set(saved)), sorted(set(saved) - set(expected))
    if missing or extra:
        what = f"{len(missing)} LoRA tensor(s) missing, e.g. {missing[0]}" if missing \
            else f"{len(extra)} unexpected tensor(s), e.g. {extra[0]}"
        raise CheckpointError(f"{path}: {what}; the checkpoint is damaged or from another setup")
    wrong = [k for k in expected if tuple(saved[k].shape) != tuple(expected[k].shape)]
    if wrong:
        raise CheckpointError(f"{path}: {wrong[0]} has shape {list(saved[wrong[0]].shape)}, this model needs "
                              f"{list(expected[wrong[0]].shape)}; the checkpoint is damaged or from another setup")
    cast = [k for k in expected if saved[k].dtype != expected[k].dtype]
    if cast:
        raise CheckpointError(f"{path}: {cast[0]} is {saved[cast[0]].dtype}, checkpoints hold "
                              f"{expected[cast[0]].dtype}; the checkpoint is damaged or from another setup")
    return saved


def read_tensors(path: Path) -> Dict[str, torch.Tensor]:
    try:
        return load_file(path)
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: unreadable ({first_line(err)}); the checkpoint is damaged, "
                              "resume from another one") from None


def _open_pickle(path: Path):
    """Open a pickle-format file the way Accelerate will (`weights_only=True`), so a tampered or truncated one is
    named here instead of failing deep inside `load_state` (or, for RNG files, only being logged)."""
    try:
        return accelerate_load(path, map_location="cpu")
    except Exception as err:  # UnpicklingError for a payload, RuntimeError/EOFError for a truncated file
        raise CheckpointError(f"{path}: refused to load ({type(err).__name__}: {first_line(err)}); it is damaged or "
                              "holds more than tensors and plain values, resume from another checkpoint") from None


def _tensors_in(value) -> Iterable:
    """(name, tensor) for every floating tensor nested in a loaded state (dicts, lists, tuples)."""
    stack = [("", value)]
    while stack:
        name, item = stack.pop()
        if isinstance(item, torch.Tensor):
            if item.is_floating_point():
                yield name, item
        elif isinstance(item, dict):
            stack.extend((f"{name}.{k}" if name else str(k), v) for k, v in item.items())
        elif isinstance(item, (list, tuple)):
            stack.extend((f"{name}.{i}" if name else str(i), v) for i, v in enumerate(item))


def _check_finite(path: Path, tensors: Iterable) -> None:
    for name, tensor in tensors:
        if not torch.isfinite(tensor).all():
            raise CheckpointError(f"{path}: {name} holds NaN or Inf values; resume from an earlier checkpoint")
