"""What the UI shows of a run, and the run lock: plain functions, no Prefect."""

import subprocess
import sys
import time

import pytest
from markdown_it import MarkdownIt

from pipeline.run.lock import RunBusyError, run_lock
from pipeline.run.report import SAMPLE_CHARS, iteration_table, samples_markdown
from pipeline.run.rundir import RunDir
from tests.conftest import ROOT

HOSTILE = [
    "<script>alert(1)</script><img src=x onerror=alert(2)>",
    "[click](http://evil.example) ![pixel](http://evil.example/p.png) <http://evil.example>",
    "plain link http://evil.example and www.evil.example and mail@evil.example",
    "```\n</code></pre><b>escaped the fence</b>\n```` and ``` more",
    "# heading\n* list\n| table | row |\n\x00\x1b[31mcontrol\x07",
]


def test_model_output_renders_as_text_only():
    rows = [{"instruction": text, "response": text, "score": 0.9, "stage": "reveal"} for text in HOSTILE]
    html = (
        MarkdownIt("commonmark")
        .enable("table")
        .render(samples_markdown(rows, "iteration 1", limit=len(rows)))
    )
    assert "<script" not in html and "<img" not in html and "<a " not in html and "<b>" not in html
    assert "<h1>" in html and html.count("<h1>") == 1  # only the title is a heading
    assert html.count("<pre>") == 2 * len(HOSTILE)  # every instruction and response is one literal block
    assert "&lt;script&gt;" in html  # shown, escaped
    assert "\x00" not in html and "\x1b" not in html


def test_long_output_is_truncated():
    text = "x" * (SAMPLE_CHARS * 3)
    shown = samples_markdown([{"instruction": "q", "response": text, "score": 1.0}], "t")
    assert "x" * SAMPLE_CHARS in shown and "x" * (SAMPLE_CHARS + 1) not in shown and "…" in shown


def test_no_samples_says_so():
    assert "No forget samples" in samples_markdown([], "t")


def test_iteration_table_has_a_row_per_iteration():
    history = [
        {"iteration": t, "forget_score": 0.5 / t, "utility_ppl": 3.0, "utility_ppl_ratio": 1.01, "kept": t < 2,
         "n_forget_samples": 10, "n_retain_samples": 20, "reward_mean": 0.4, "reward_max": 0.9}
        for t in (1, 2)
    ]  # fmt: skip
    table = iteration_table(history)
    assert [row["iteration"] for row in table] == [1, 2]
    assert [row["kept"] for row in table] == ["yes", "dropped"]
    assert table[0]["forget_samples"] == 10 and table[0]["reward_max"] == 0.9


def test_a_second_process_cannot_take_a_held_run_lock(tmp_path):
    run_dir = tmp_path / "runs" / "demo"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import time; from pipeline.run.lock import run_lock\n"
         f"with run_lock(__import__('pathlib').Path({str(run_dir)!r})):\n print('held', flush=True); time.sleep(60)"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(RunBusyError, match=rf"run {run_dir} is already running \(process {holder.pid}"):
        with run_lock(run_dir):
            pass
    holder.kill()  # the kernel drops a dead process's lock: no stale lock to clean up
    holder.wait()
    deadline = time.monotonic() + 10
    while True:
        try:
            with run_lock(run_dir), run_lock(run_dir):  # and the lock is re-entrant in one process
                break
        except RunBusyError:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert RunDir(run_dir).lock == tmp_path / "runs" / ".demo.lock"
    assert not run_dir.exists()  # the lock never creates the run directory


def test_a_base_run_must_be_finished_with_an_adapter_and_the_same_model(tmp_path):
    from pipeline.config import ConfigError, load_config
    from pipeline.run.base_run import check_base_run

    first = load_config(ROOT / "configs" / "tiny.yaml", out=tmp_path, name="first")
    first.run_dir.mkdir(parents=True)
    (first.run_dir / "config.yaml").write_text(first.to_yaml())
    second = load_config(
        ROOT / "configs" / "tiny.yaml", [f"base_run={first.run_dir}"], out=tmp_path, name="second"
    )
    with pytest.raises(ConfigError, match="has not finished"):
        check_base_run(second)
    (first.run_dir / "summary.json").write_text('{"stop_reason": "max_iterations"}')
    with pytest.raises(ConfigError, match="kept no adapter"):
        check_base_run(second)
    (first.run_dir / "adapter").mkdir()
    (first.run_dir / "adapter" / "adapter_config.json").write_text("{}")
    check_base_run(second)
    other_model = load_config(
        ROOT / "configs" / "tiny.yaml",
        [f"base_run={first.run_dir}", "model.tiny.hidden_size=64"],
        out=tmp_path,
        name="x",
    )
    with pytest.raises(ConfigError, match="used model"):
        check_base_run(other_model)
    itself = load_config(
        ROOT / "configs" / "tiny.yaml", [f"base_run={first.run_dir}"], out=tmp_path, name="first"
    )
    with pytest.raises(ConfigError, match="own directory"):
        check_base_run(itself)
