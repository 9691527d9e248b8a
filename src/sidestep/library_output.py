"""What third-party libraries would print is kept out of our console and `train.log`, at its source.

- Library loggers speak only at WARNING and above (`conf/hydra/job_logging/sidestep.yaml`: TensorBoard's event
  reader would say "No path found after ..." at every report rewrite).
- transformers and diffusers draw no progress bars ("Loading weights", "Writing model shards": a few seconds of a
  local read or write) and log through our handlers, so what they warn about reaches the console and `train.log`
  in our format, once.
- torch's weight_norm deprecation, which diffusers' VAE triggers on every build, is not shown.
- What a library prints with `print` (Prodigy's "Using decoupled weight decay") goes to the debug log.
"""

import contextlib
import io
import logging
import warnings
from typing import Iterator

log = logging.getLogger("sidestep.libraries")
WEIGHT_NORM_WARNING = ".*weight_norm.*is deprecated"


def route_model_libraries() -> None:
    """Called where transformers and diffusers are first used to build models (`models/source.py`)."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    for library in (transformers_logging, diffusers_logging):
        library.disable_progress_bar()
        library.disable_default_handler()
        library.enable_propagation()
    warnings.filterwarnings("ignore", message=WEIGHT_NORM_WARNING, category=FutureWarning)


@contextlib.contextmanager
def prints_to_debug_log() -> Iterator[None]:
    """Lines printed to stdout inside the block become debug records of `sidestep.libraries`."""
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            yield
    finally:
        for line in printed.getvalue().splitlines():
            log.debug("printed by a library: %s", line)
