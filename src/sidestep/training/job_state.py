"""What a run sets for the whole process comes from its own config, set at its start and put back at its end.

A `-m` sweep runs its jobs one after another in one Python process, and some settings are process-wide:
diffusers' active attention backend, Accelerate's precision and accumulation (a singleton that refuses a second
precision), torch.compile's caches, the warnings filters, the random generators (seeded from `trainer.seed` by
`set_up_run`). Each job starts from its own config for every one of them, so nothing an earlier job chose carries
into the next (a `flex` job once left FlexAttention active for the `native` job after it).
"""

import contextlib
import warnings
from typing import Iterator

import torch
from accelerate.state import AcceleratorState, GradientState
from diffusers.models.attention_dispatch import attention_backend


@contextlib.contextmanager
def fresh_process_state() -> Iterator[None]:
    """Enter before the accelerator is built: the previous job's Accelerate state and compiled graphs are
    forgotten, and the warnings filters this job adds are dropped when it ends."""
    AcceleratorState._reset_state()  # keeps the process group (PartialState) of a multi-process launch
    GradientState._reset_state()
    torch._dynamo.reset()
    with warnings.catch_warnings():
        yield


def active_attention(backend: str) -> contextlib.AbstractContextManager:
    """diffusers' process-wide attention backend is this run's for as long as it trains, then what it was."""
    return attention_backend(backend)
