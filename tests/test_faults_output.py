"""What a run writes comes out whole. User and model text is never parsed as markup in plots
(issue 20): a `$` in a target's description or a method's name starts matplotlib's mathtext by
default, and an unbalanced one failed the plot after summary.json was written, so report.md was
never written. A full disk leaves the file before it, or none, and is told apart from bad input."""

import errno
import os

import pytest

import pipeline.files
import pipeline.run.loop
from pipeline.bench.results import plot_bars
from pipeline.config import load_config
from pipeline.files import write_text
from pipeline.run.loop import prepare_run_dir
from pipeline.run.report import plot_forgetting
from pipeline.run.state import RunState

TEXT = r"insults worth $5, $\frac{$"  # mathtext that matplotlib cannot parse


def test_the_forgetting_plot_prints_a_description_with_dollars_as_it_is(tmp_path):
    entry = {"forget_score": 0.2, "utility_ppl_ratio": 1.1}
    summary = {
        "name": "run $1", "target": {"description": TEXT},
        "baseline": {"forget_score": 0.5, "utility_ppl_ratio": 1.0}, "history": [{"iteration": 1, **entry}],
    }  # fmt: skip
    path = tmp_path / "plots" / "forgetting.png"
    plot_forgetting(summary, path)
    assert path.stat().st_size > 0


def test_benchmark_bars_print_names_with_dollars_as_they_are(tmp_path):
    results = {"methods": {TEXT: {"forget_probe_acc": 0.1, "forget_probe_acc_sd": 0.01}}}
    path = tmp_path / "plot.png"
    plot_bars(results, [("forget_probe_acc", "acc $"), ("forget_probe_acc", TEXT)], TEXT, path)
    assert path.stat().st_size > 0


def test_a_file_written_on_a_full_disk_leaves_neither_a_half_file_nor_a_stray_one(tmp_path, monkeypatch):
    path = tmp_path / "bench.yaml"
    write_text(path, "seed: 0\n")
    real_fdopen = os.fdopen

    class FullDisk:  # a short text is buffered: the disk says it is full when it is flushed, on close
        def __init__(self, fd, *args, **kwargs):
            self.file = real_fdopen(fd, *args, **kwargs)

        def __enter__(self):
            return self

        def write(self, text):
            return len(text)

        def __exit__(self, *exc):
            self.file.close()
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pipeline.files.os, "fdopen", FullDisk)
    with pytest.raises(OSError) as info:
        write_text(path, "seed: 1\n")
    assert info.value.errno == errno.ENOSPC
    assert path.read_text() == "seed: 0\n" and sorted(p.name for p in tmp_path.iterdir()) == ["bench.yaml"]


def test_a_full_disk_when_a_run_starts_is_not_called_bad_input(tmp_path, monkeypatch):
    state = RunState(load_config("configs/tiny.yaml", out=tmp_path), progress=False)

    def full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pipeline.run.loop, "write_text", full)
    with pytest.raises(OSError) as info:  # not a ConfigError (exit 2): rr says the disk is full, exit 5
        prepare_run_dir(state)
    assert info.value.errno == errno.ENOSPC
