"""`rr export`: a finished run as one PEFT adapter with a model card, as a merged model, or its samples.

The run's stacked adapter is already an ordinary PEFT LoRA (`runs/<name>/adapter`); exporting
copies it with a README that says what it does, or merges it into the base weights so that any
tool that reads a transformers folder can serve the unlearned model without PEFT. The forget and
retain samples the kept adapters were trained on go out as a `datasets` DatasetDict.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pipeline.config import ConfigError, RunConfig, load_config
from pipeline.datasource import quiet_datasets
from pipeline.files import atomic_dir, check_writable_folder, read_jsonl
from pipeline.run.chain import read_summary, summary_problem, walk
from pipeline.run.rundir import RunDir, has_adapter


def finished_run(run_dir: Path) -> tuple[RunConfig, dict]:
    """The config and summary of a run that has ended with a stacked adapter; ConfigError otherwise.

    Its iterations must be as the summary recorded them (`pipeline.run.chain`): an iteration
    changed or removed since would be exported under figures it no longer has.
    """
    run_dir = Path(run_dir)
    files = RunDir(run_dir)
    if not files.config.is_file():
        raise ConfigError(f"{run_dir}: not a run directory (no config.yaml)")
    redo = f"run `rr unlearn` with its config (--out {run_dir.parent} --name {run_dir.name}) to redo it"
    summary = read_summary(files, f"delete that file and {redo}")
    if summary is None or not summary.get("stop_reason"):
        raise ConfigError(f"{run_dir}: the run has not finished (no summary.json); run `rr unlearn` again")
    problem = summary_problem(files, summary, walk(files), adapter=False)
    if problem is not None:
        raise ConfigError(f"{run_dir}: {problem}; {redo}")
    if not has_adapter(files.adapter):
        raise ConfigError(f"{run_dir}: the run kept no adapter (stop reason: {summary.get('stop_reason')})")
    try:
        config = load_config(files.config)
    except ConfigError as exc:
        raise ConfigError(f"{exc}: the run folder is damaged, it cannot be exported") from None
    return config, summary


def refuse_existing(out: Path) -> None:
    """ConfigError unless `out` can become a new folder: absent or empty, under a writable folder."""
    check_writable_folder(out, "folder")
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out}: exists and is not empty; choose another folder or delete it")


def refuse_overlapping(targets: list[Path]) -> None:
    """ConfigError if two export targets are one folder or one lies inside another: the second write
    would fail, or land inside the first, after the first was written."""
    resolved = [Path(t).resolve() for t in targets]  # a link to a folder is that folder
    for i, a in enumerate(resolved):
        for b in resolved[i + 1 :]:
            if a == b or a in b.parents or b in a.parents:
                raise ConfigError(f"{a} and {b}: one folder for two exports; give each its own")


def refuse_inside_run(run_dir: Path, targets: list[Path]) -> None:
    """ConfigError if an export target is the run folder or lies inside it: an export is meant to
    leave the run (to be copied, served, shared), and one inside would mix with the run's own files
    and go wherever the run folder goes, deleted with it."""
    run = Path(run_dir).resolve()
    for target in targets:
        resolved = Path(target).resolve()
        if run == resolved or run in resolved.parents:
            raise ConfigError(f"{target}: inside the run folder {run_dir}; export to a folder outside it")


def model_card(config: RunConfig, summary: dict) -> str:
    base, final = summary["baseline"], summary["final"]
    kept = [h for h in summary["history"] if h.get("kept")]
    rows = [("base model", base), *((f"after iteration {h['iteration']}", h) for h in summary["history"])]
    table = ["| model | forget score | utility ppl ratio |", "|---|---:|---:|"]
    table += [f"| {label} | {m['forget_score']:.3f} | {m['utility_ppl_ratio']:.3f} |" for label, m in rows]
    return "\n".join(
        [
            "---",
            "library_name: peft",
            f"base_model: {summary['model']}",
            "tags: [unlearning, lora, reveal-release]",
            "---",
            f"# {config.name}: {config.target.kind} unlearned from {config.model.path}",
            "",
            f"A LoRA adapter (rank {len(kept) * config.release.rank}, {len(kept)} stacked "
            f"iterations of {config.release.method}) made by Reveal & Release to forget "
            f"**{config.target.description}** ({config.target.kind}). The model revealed what it knew "
            "under instructions chosen by a NeuralUCB bandit; no copy of the forgotten data was used.",
            "",
            f"Forget score {base['forget_score']:.3f} -> {final['forget_score']:.3f} (lower is more "
            f"forgotten); utility perplexity ratio {final['utility_ppl_ratio']:.3f}. Stop reason: "
            f"{summary['stop_reason']}.",
            "",
            *table,
            "",
            "```python",
            "from peft import PeftModel",
            "from transformers import AutoModelForCausalLM",
            f'model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("{summary["model"]}"), "<this folder>")',
            "```",
            "",
        ]
    )


def check_run_adapter(run_dir: Path) -> None:
    """ConfigError if the run's stacked adapter is damaged: never export, or merge, a broken one."""
    from pipeline.models import adapter_problem

    folder = RunDir(run_dir).adapter
    problem = adapter_problem(folder)
    if problem is not None:
        raise ConfigError(
            f"{folder}: {problem}; this run cannot be exported (run it again under another --name)"
        )


def export_adapter(run_dir: Path, out: Path) -> Path:
    config, summary = finished_run(run_dir)
    refuse_existing(out)
    check_run_adapter(run_dir)
    with atomic_dir(out) as tmp:
        shutil.copytree(RunDir(run_dir).adapter, tmp, dirs_exist_ok=True)
        (tmp / "README.md").write_text(model_card(config, summary))
    return out


def export_merged(run_dir: Path, out: Path, progress: bool = True) -> Path:
    """Base weights + the stacked adapter, merged, as a safetensors transformers folder."""
    from pipeline.models import with_adapter
    from pipeline.run.model import load_run_model

    config, summary = finished_run(run_dir)
    refuse_existing(out)
    check_run_adapter(run_dir)
    # Loaded as the run loaded it: a tiny model's tokenizer, and a planted model's cache key, depend on it.
    model, tokenizer, _ = load_run_model(config, progress)
    merged = with_adapter(model, RunDir(run_dir).adapter)
    with atomic_dir(out) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "README.md").write_text(
            model_card(config, summary).replace("library_name: peft", "library_name: transformers")
        )
    return out


# The exported samples' columns and their types.
DATASET_COLUMNS = {
    "text": "string",
    "instruction": "string",
    "score": "float64",
    "iteration": "int64",
    "stage": "string",
}


def kept_iterations(summary: dict) -> list[int]:
    """The iterations whose adapter is in the run's stack (a dropped one broke the utility floor)."""
    return [h["iteration"] for h in summary["history"] if h.get("kept")]


def kept_samples(run_dir: Path, summary: dict) -> dict[str, list[dict]]:
    """The forget and retain rows of the kept iterations; `text` is a row's response."""
    files = RunDir(run_dir)
    kept = kept_iterations(summary)
    return {
        split: [
            {**row, "text": row["response"]}
            for t in kept
            for row in read_jsonl(getattr(files.iteration(t), split))
        ]
        for split in ("forget", "retain")
    }


def export_dataset(run_dir: Path, out: Path) -> Path:
    """The kept iterations' samples as a DatasetDict (splits forget, retain) that `load_from_disk` opens."""
    config, summary = finished_run(run_dir)
    refuse_existing(out)
    samples = kept_samples(run_dir, summary)
    with quiet_datasets() as datasets:
        features = datasets.Features({name: datasets.Value(kind) for name, kind in DATASET_COLUMNS.items()})
        # Built column by column with fixed features, so an empty split still has every column.
        splits = datasets.DatasetDict({
            split: datasets.Dataset.from_dict({c: [row[c] for row in rows] for c in features}, features=features)
            for split, rows in samples.items()
        })  # fmt: skip
        with atomic_dir(out) as tmp:
            # One shard a split: `datasets` saves an empty split in no shards, and cannot open that again.
            splits.save_to_disk(str(tmp), num_shards={split: 1 for split in splits})
            (tmp / "README.md").write_text(dataset_card(config, summary, samples))
    return out


def dataset_card(config: RunConfig, summary: dict, samples: dict[str, list[dict]]) -> str:
    kept = kept_iterations(summary)
    return "\n".join([
        f"# {config.name}: the samples that unlearned {config.target.kind} from {config.model.path}",
        "",
        f"What the model revealed about **{config.target.description}** and was trained to forget (split "
        f"`forget`, {len(samples['forget'])} rows), and what it was trained to keep (split `retain`, "
        f"{len(samples['retain'])} rows), in the kept iterations {kept} of a Reveal & Release run "
        f"({config.release.method}). Columns: {', '.join(DATASET_COLUMNS)}; `stage` says where a row came from "
        "(forget: sample, reveal; retain: retain, corpus).",
        "",
        "```python",
        "from datasets import load_from_disk",
        'samples = load_from_disk("<this folder>")',
        "```",
        "",
    ])  # fmt: skip
