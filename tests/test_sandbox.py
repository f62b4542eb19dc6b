"""The sandbox that runs a model's code with its unit tests: it passes what is right, and it stops a
reply that loops forever, allocates without bound, prints without end, opens a socket, starts a
process, reads our environment or writes outside its folder."""

import os
import socket
import threading

import pytest

from pipeline.bench.sandbox import KEPT_CHARS, run_sandboxed

ADD = "def add(a, b):\n    return a + b\n"


def test_a_right_solution_passes_and_a_wrong_one_fails_its_tests():
    assert run_sandboxed(ADD, "assert add(2, 3) == 5").passed
    wrong = run_sandboxed(ADD.replace("a + b", "a - b"), "assert add(2, 3) == 5")
    assert wrong.status == "failed" and "AssertionError" in wrong.output
    broken = run_sandboxed("def add(a, b) return a + b", "assert add(2, 3) == 5")
    assert broken.status == "failed" and "SyntaxError" in broken.output


def test_the_standard_library_is_there_and_the_folder_is_writable():
    code = (
        "import collections, dataclasses, json, math, re\n"
        "Point = collections.namedtuple('Point', 'x y')\n"
        "open('notes.txt', 'w').write(json.dumps(Point(1, 2)._asdict()))\n"
    )
    result = run_sandboxed(code, "assert open('notes.txt').read() == '{\"x\": 1, \"y\": 2}'")
    assert result.passed, result.output


def test_a_reply_that_loops_forever_is_stopped_at_the_time_limit():
    result = run_sandboxed("while True:\n    pass\n", timeout_s=1.5)
    assert result.status in ("timeout", "killed") and result.seconds < 5


def test_a_reply_that_allocates_without_bound_is_stopped():
    result = run_sandboxed("chunks = []\nwhile True:\n    chunks.append(bytearray(10**7))\n", memory_mb=256)
    assert not result.passed and result.seconds < 10
    assert "MemoryError" in result.output or result.status == "killed"


def test_a_reply_that_prints_without_end_is_stopped_and_its_output_kept_short():
    result = run_sandboxed("while True:\n    print('spam' * 100)\n", timeout_s=10)
    assert not result.passed and result.seconds < 10 and len(result.output) <= KEPT_CHARS


@pytest.mark.parametrize(
    "code",
    [
        "import socket\nsocket.create_connection(('127.0.0.1', PORT), timeout=2)\n",
        "import _socket\ns = _socket.socket()\ns.connect(('127.0.0.1', PORT))\n",
        "import urllib.request\nurllib.request.urlopen('http://127.0.0.1:PORT/', timeout=2)\n",
    ],
)
def test_a_reply_that_opens_a_socket_reaches_nothing(code):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(3)
    reached = []
    threading.Thread(target=lambda: reached.append(_accept(listener)), daemon=True).start()
    result = run_sandboxed(code.replace("PORT", str(listener.getsockname()[1])))
    listener.close()
    assert not result.passed and reached in ([], [None]), result.output
    # Where the OS allows (root, or user namespaces) there is no network to reach at all.
    assert result.network_isolated or os.geteuid() != 0


def _accept(listener):
    try:
        return listener.accept()
    except OSError:
        return None


def test_a_reply_that_writes_or_deletes_outside_its_folder_changes_nothing(tmp_path):
    kept = tmp_path / "kept.txt"
    kept.write_text("ours")
    attempts = [
        f"open({str(tmp_path / 'new.txt')!r}, 'w').write('x')",
        f"open({str(kept)!r}, 'a').write('x')",
        f"import os\nos.remove({str(kept)!r})",
        f"import os\nos.rename({str(kept)!r}, 'stolen.txt')",
        f"import shutil\nshutil.rmtree({str(tmp_path)!r})",
    ]
    for code in attempts:
        result = run_sandboxed(code)
        assert result.status == "failed" and "sandbox:" in result.output, (code, result.output)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.txt"] and kept.read_text() == "ours"


def test_a_reply_sees_none_of_our_environment_and_starts_no_process(monkeypatch):
    monkeypatch.setenv("RR_TEST_SECRET", "hunter2")
    seen = run_sandboxed("import os\nprint(sorted(os.environ))\nprint(os.environ.get('RR_TEST_SECRET'))")
    assert seen.passed and "hunter2" not in seen.output and "RR_TEST_SECRET" not in seen.output
    for code in ["import os\nos.system('true')", "import subprocess\nsubprocess.run(['true'])",
                 "import os\nos.fork()", "import os\nos.execv('/bin/true', ['true'])"]:  # fmt: skip
        result = run_sandboxed(code)
        assert result.status == "failed" and "not allowed" in result.output, (code, result.output)


def test_a_reply_cannot_read_our_files(tmp_path):
    secret = tmp_path / "id_rsa"
    secret.write_text("PRIVATE KEY")
    result = run_sandboxed(f"print(open({str(secret)!r}).read())")
    assert result.status == "failed" and "PRIVATE KEY" not in result.output and "sandbox:" in result.output
