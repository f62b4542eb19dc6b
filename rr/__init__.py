"""`rr`, the command line of Reveal & Release (`rr.cli:app`)."""

import sys

# peft imports bitsandbytes whenever it is installed, and that import costs every `rr` process
# about 2 s (it compiles its kernels with torch.compile) and, on CPUs with AVX512-BF16, a request
# to the Hugging Face hub for a kernel to download. Only the planted benchmark's 4-bit attack uses
# it, and imports it there (`pipeline.bench.attacks.quantize_4bit`). A None entry makes
# `import bitsandbytes` fail and `importlib.util.find_spec` find nothing, so peft and transformers
# take it for not installed.
sys.modules.setdefault("bitsandbytes", None)
