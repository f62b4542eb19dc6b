"""What an `rr` process imports: not bitsandbytes, whose import costs seconds and asks the hub for
a kernel (rr/__init__.py); the planted benchmark's 4-bit attack still gets it (tests/test_bench.py)."""

import subprocess
import sys

from tests.conftest import ROOT


def test_an_rr_process_does_not_import_bitsandbytes():
    code = (
        "import rr.cli, sys; from pipeline.release.train import train_adapter; "
        "import peft.import_utils as p; print(sys.modules['bitsandbytes'], p.is_bnb_available())"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["None", "False"]
