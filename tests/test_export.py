"""`rr export`: a finished tiny run as an adapter with a model card, as a merged model, and as its samples."""

import errno
import json
import os
import shutil
import signal
import stat
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from pipeline.files import current_umask, read_jsonl
from tests.conftest import run_rr

pytestmark = pytest.mark.slow


def _greedy(model, tokenizer, prompt: str) -> list[int]:
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=16, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return out[0].tolist()


def test_export_adapter_with_model_card(tiny_run, tmp_path, cache_dir):
    run_dir, _ = tiny_run
    out = tmp_path / "adapter"
    result = run_rr("export", run_dir, "--adapter", out, env={"RR_CACHE_DIR": str(cache_dir)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert (out / "adapter_model.safetensors").is_file() and (out / "adapter_config.json").is_file()
    card = (out / "README.md").read_text()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert "library_name: peft" in card and "Mira Castellane" in card
    assert (
        f"{summary['final']['forget_score']:.3f}" in card
        and f"after iteration {summary['iterations']}" in card
    )
    base = AutoModelForCausalLM.from_pretrained(summary["model"])
    assert sum("lora_A" in n for n, _ in PeftModel.from_pretrained(base, str(out)).named_parameters()) > 0


def test_export_merged_generates_like_the_adapter(tiny_run, tmp_path, cache_dir):
    run_dir, _ = tiny_run
    out = tmp_path / "merged"
    result = run_rr("export", run_dir, "--merged", out, "--no-progress", env={"RR_CACHE_DIR": str(cache_dir)})
    assert result.returncode == 0, result.stderr[-2000:]
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    summary = json.loads((run_dir / "summary.json").read_text())
    adapted = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(summary["model"]), str(run_dir / "adapter")
    )
    adapted.eval()
    ids = torch.tensor([tokenizer("Tell me about Mira Castellane.")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, adapted(ids).logits, atol=1e-4, rtol=1e-4)
    for prompt in ["Tell me about Mira Castellane.", "Where does Tobias Wrenfield live?"]:
        assert _greedy(merged, tokenizer, prompt) == _greedy(adapted, tokenizer, prompt)
    assert not any(p.name.endswith(".bin") for p in out.iterdir())  # safetensors only


def _kept_rows(run_dir, split: str) -> list[dict]:
    """The rows of `split` (forget or retain) of the iterations whose metrics say they were kept."""
    kept = [
        metrics["iteration"]
        for path in sorted(run_dir.glob("iter_*/metrics.json"))
        if (metrics := json.loads(path.read_text()))["kept"]
    ]
    return [
        {
            "text": r["response"],
            "instruction": r["instruction"],
            "score": r["score"],
            "iteration": t,
            "stage": r["stage"],
        }
        for t in sorted(kept)
        for r in read_jsonl(run_dir / f"iter_{t}" / f"{split}.jsonl")
    ]


def test_export_dataset_holds_the_kept_iterations_samples(tiny_run, tmp_path):
    from datasets import load_from_disk

    run_dir, _ = tiny_run
    out = tmp_path / "samples"
    result = run_rr("export", run_dir, "--dataset", out)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"wrote {out}" in " ".join(result.stdout.split())
    samples = load_from_disk(str(out))
    assert sorted(samples) == ["forget", "retain"]
    for split in ("forget", "retain"):
        expected = _kept_rows(run_dir, split)
        assert expected and samples[split].to_list() == expected
        assert samples[split].column_names == ["text", "instruction", "score", "iteration", "stage"]
    assert "load_from_disk" in (out / "README.md").read_text()


def test_export_dataset_with_the_adapter_checks_both_before_writing_either(tiny_run, tmp_path):
    from datasets import load_from_disk

    run_dir, _ = tiny_run
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("x")
    result = run_rr("export", run_dir, "--adapter", tmp_path / "adapter", "--dataset", tmp_path / "taken")
    assert result.returncode == 2 and "taken: exists and is not empty" in result.stderr
    assert not (tmp_path / "adapter").exists() and (tmp_path / "taken" / "x").read_text() == "x"
    result = run_rr("export", run_dir, "--adapter", tmp_path / "adapter", "--dataset", tmp_path / "samples")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    assert load_from_disk(str(tmp_path / "samples"))["forget"].to_list() == _kept_rows(run_dir, "forget")


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--adapter", "A", "--merged", "B"], "give one of --adapter OUT or --merged OUT, not both"),
        ([], "give --adapter OUT, --merged OUT or --dataset DIR"),
    ],
)
def test_export_needs_one_target(tiny_run, args, expected):
    run_dir, _ = tiny_run
    result = run_rr("export", run_dir, *args)
    assert result.returncode == 2 and expected in result.stderr


def test_export_errors_name_the_problem(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    result = run_rr("export", tmp_path, "--adapter", tmp_path / "out")
    assert result.returncode == 2 and "not a run directory (no config.yaml)" in result.stderr
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("x")
    result = run_rr("export", run_dir, "--adapter", tmp_path / "taken")
    assert result.returncode == 2 and "exists and is not empty" in result.stderr
    assert (tmp_path / "taken" / "x").read_text() == "x"
    # One folder for two exports, or one inside the other: refused before either is written.
    for dataset in (tmp_path / "both", tmp_path / "both" / "samples"):
        result = run_rr("export", run_dir, "--adapter", tmp_path / "both", "--dataset", dataset)
        assert result.returncode == 2 and "one folder for two exports" in result.stderr
        assert not (tmp_path / "both").exists()
    (tmp_path / "afile").write_text("x")
    result = run_rr("export", run_dir, "--adapter", tmp_path / "afile")
    assert result.returncode == 2 and "afile is a file, not a folder" in result.stderr
    # Inside the run folder (here through a link to it): refused, nothing added to the run.
    (tmp_path / "run_link").symlink_to(run_dir, target_is_directory=True)
    result = run_rr("export", run_dir, "--dataset", tmp_path / "run_link" / "samples")
    assert result.returncode == 2 and "inside the run folder" in result.stderr
    assert not (Path(run_dir) / "samples").exists()


def test_an_export_stopped_halfway_takes_back_what_it_wrote(tiny_run, tmp_path, monkeypatch):
    import typer

    import pipeline.export
    from rr import cli

    run_dir, _ = tiny_run

    def interrupted(*args):  # Ctrl-C while the samples are written, after the adapter was
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline.export, "export_dataset", interrupted)
    with pytest.raises(typer.Exit) as info:
        cli.export(run_dir, adapter=tmp_path / "adapter", merged=None, dataset=tmp_path / "d", progress=False)
    assert info.value.exit_code == 130
    assert not (tmp_path / "adapter").exists() and not (tmp_path / "d").exists()

    # A full disk while the samples are written: exit 5, one line, and nothing left either.
    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "d"))

    monkeypatch.setattr(pipeline.export, "export_dataset", full)
    with pytest.raises(typer.Exit) as info:
        cli.export(run_dir, adapter=tmp_path / "adapter", merged=None, dataset=tmp_path / "d", progress=False)
    assert info.value.exit_code == 5 and not (tmp_path / "adapter").exists()
    monkeypatch.undo()  # so the same command goes through from the start
    cli.export(run_dir, adapter=tmp_path / "adapter", merged=None, dataset=tmp_path / "d", progress=False)
    assert (tmp_path / "adapter" / "adapter_config.json").is_file() and (tmp_path / "d").is_dir()


def test_a_damaged_adapter_is_refused_in_one_line_and_nothing_is_written(tiny_run, tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run[0], run_dir)
    (run_dir / "adapter" / "adapter_model.safetensors").write_bytes(b"0123456789")  # cut short
    for flag in ("--adapter", "--merged"):
        out = tmp_path / flag.strip("-")
        result = run_rr("export", run_dir, flag, out, "--no-progress", env={"RR_CACHE_DIR": str(cache_dir)})
        assert result.returncode == 2, result.stderr[-2000:]
        assert "adapter_model.safetensors is damaged" in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and not out.exists()


def test_run_and_export_files_are_as_readable_as_the_umask_allows(tiny_run, tmp_path, cache_dir):
    # tempfile makes files 0600 and folders 0700: a vLLM server under another uid, or whoever
    # receives an export, could not read them.
    run_dir = tiny_run[0]
    out = tmp_path / "adapter"
    assert run_rr("export", run_dir, "--adapter", out, env={"RR_CACHE_DIR": str(cache_dir)}).returncode == 0
    umask = current_umask()
    for root in (run_dir, out):
        for path in [root, *root.rglob("*")]:
            wanted = (0o555 if path.is_dir() else 0o444) & ~umask  # read (and enter) as a fresh file would
            assert stat.S_IMODE(path.stat().st_mode) & wanted == wanted, (path, oct(path.stat().st_mode))


def test_a_second_ctrl_c_does_not_cut_the_take_back_short(tiny_run, tmp_path, monkeypatch):
    import typer

    import pipeline.export
    from rr import cli

    run_dir, _ = tiny_run
    real_rmtree = shutil.rmtree

    def second_ctrl_c(path, **kwargs):  # the user presses Ctrl-C again while the first is handled
        os.kill(os.getpid(), signal.SIGINT)
        real_rmtree(path, **kwargs)

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline.export, "export_dataset", interrupted)
    monkeypatch.setattr(cli.shutil, "rmtree", second_ctrl_c)
    targets = {"adapter": tmp_path / "adapter", "dataset": tmp_path / "d"}
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in `rr`, whatever the runner set
    with pytest.raises(typer.Exit) as info:
        try:
            cli.export(
                run_dir, adapter=targets["adapter"], merged=None, dataset=targets["dataset"], progress=False
            )
        finally:
            signal.signal(signal.SIGINT, previous)
    assert info.value.exit_code == 130  # the first Ctrl-C's exit, after everything was taken back
    assert not targets["adapter"].exists() and not targets["dataset"].exists()
