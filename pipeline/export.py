"""`rr export`: a finished run as one PEFT adapter with a model card, or as a merged model.

The run's stacked adapter is already an ordinary PEFT LoRA (`runs/<name>/adapter`); exporting
copies it with a README that says what it does, or merges it into the base weights so that any
tool that reads a transformers folder can serve the unlearned model without PEFT.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from pipeline.config import ConfigError, RunConfig, load_config
from pipeline.files import atomic_dir
from pipeline.run.rundir import RunDir, has_adapter


def finished_run(run_dir: Path) -> tuple[RunConfig, dict]:
    """The config and summary of a run that has ended with a stacked adapter; ConfigError otherwise."""
    run_dir = Path(run_dir)
    files = RunDir(run_dir)
    if not files.config.is_file():
        raise ConfigError(f"{run_dir}: not a run directory (no config.yaml)")
    if not files.summary.is_file():
        raise ConfigError(f"{run_dir}: the run has not finished (no summary.json); run `rr unlearn` again")
    summary = json.loads(files.summary.read_text())
    if not has_adapter(files.adapter):
        raise ConfigError(f"{run_dir}: the run kept no adapter (stop reason: {summary.get('stop_reason')})")
    return load_config(files.config), summary


def refuse_existing(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out}: exists and is not empty; choose another folder or delete it")


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


def export_adapter(run_dir: Path, out: Path) -> Path:
    config, summary = finished_run(run_dir)
    refuse_existing(out)
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
