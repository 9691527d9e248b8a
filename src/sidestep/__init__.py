"""Side-Step: LoRA and other adapters for the ACE-Step 1.5 music models. See ARCHITECTURE.md for the parts."""

import logging

# bitsandbytes (imported by PEFT, so by every model load) tries at import to fetch a CPU kernel from the Hugging Face
# hub through the `kernels` package and warns when it cannot. Side-Step never downloads at run time, and the
# built-in fallback is the one it uses, so the warning would only bury the first line of our own output.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
