"""Reveal & Release: unlearning without the data to forget (see README.md and the layers in tests/test_layers.py)."""

import logging

# bitsandbytes (the planted benchmark's 4-bit attack; peft imports it whenever it is installed,
# except under `rr`: rr/__init__.py) warns at import that it cannot fetch an optional CPU kernel
# from the Hugging Face hub. Its pure-torch path is the one we want: the line is only noise.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
