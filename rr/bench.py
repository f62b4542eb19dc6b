"""`rr bench ...`: the benchmarks, each one command; results.json, report.md and a plot in --out."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import typer
from rich.table import Table

from pipeline.config import ConfigError, load_config
from pipeline.files import check_writable_folder
from pipeline.model_paths import check_model_path
from pipeline.planting.spec import SpecError
from rr.console import EXIT_DISK_FULL, disk_full, err, fail, one_line, out
from rr.signals import interrupt_exit_code


@contextmanager
def bench_errors(out_dir: Path):
    """Bad input: one line, exit 2. Ctrl-C: exit 130, with how to go on."""
    try:
        check_writable_folder(out_dir)
        yield
    except (ConfigError, SpecError) as exc:
        fail(str(exc))
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (rr.signals)
        fail(f"interrupted; run the same command again to resume in {out_dir}", interrupt_exit_code(exc))
    except Exception as exc:
        if not disk_full(exc):
            raise
        fail(f"the disk is full ({one_line(exc)}); free space, then run the same command again to resume in "
             f"{out_dir}", EXIT_DISK_FULL)  # fmt: skip


bench = typer.Typer(no_args_is_help=True, help="Benchmarks: the loop against oracle baselines.")


def checked_config(config: Path, overrides: list[str]):
    """The config, its model path and the names it gives (objective, sampler, judges) checked before
    a benchmark's module is imported: that imports the whole loop (seconds), bad input need not wait."""
    from pipeline.run.preflight import check_names

    cfg = load_config(config, overrides)
    check_model_path(cfg.model)
    check_names(cfg)
    return cfg


@bench.command("planted")
def bench_planted(
    spec: Path = typer.Option(
        ..., "--spec", help="planted-people spec (JSON), e.g. data/bench/planted_default.json"
    ),
    config: Path = typer.Option(
        ..., "--config", help="run config whose model, plant and release settings to use"
    ),
    out_dir: Path = typer.Option(..., "--out", help="folder for results.json, report.md, plot.png"),
    methods: str = typer.Option(
        None,
        "--methods",
        help="comma-separated: rr and any objective as an oracle (default: rr, ga, graddiff, npo, undial)",
    ),
    seeds: int = typer.Option(
        1, "--seeds", min=1, help="runs of rr and the oracles (one planting); figures are mean ± sd"
    ),
    overrides: list[str] = typer.Option([], "--set", help="override a config field: --set release.steps=10"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show progress bars"),
) -> None:
    """Plant people into the model, unlearn the forget people with rr and the oracles, compare."""
    from pipeline.bench.methods import PLANTED_DEFAULT, PLANTED_METHODS, parse_methods
    from pipeline.planting.spec import load_spec

    with bench_errors(out_dir):
        chosen = parse_methods(list(PLANTED_DEFAULT) if methods is None else methods, PLANTED_METHODS)
        cfg = load_config(config, overrides)
        load_spec(spec)
        check_model_path(cfg.model)
        from pipeline.bench.planted import run_planted_bench

        results = run_planted_bench(spec, cfg, out_dir, chosen, progress, log=err.print, seeds=seeds)
    _print_bench(results, out_dir, "planted")


@bench.command("toxicity")
def bench_toxicity(
    config: Path = typer.Option(
        ..., "--config", help="run config with a toxicity target, e.g. configs/demo.yaml"
    ),
    out_dir: Path = typer.Option(..., "--out", help="folder for results.json, report.md, plot.png"),
    methods: str = typer.Option("base,rr,rr_fixed,random", "--methods", help="comma-separated methods"),
    seeds: int = typer.Option(1, "--seeds", min=1, help="runs of the whole pipeline; figures are mean ± sd"),
    samples: int = typer.Option(25, "--samples", min=1, help="sampled replies per prompt (K)"),
    max_new_tokens: int = typer.Option(
        20, "--max-new-tokens", min=1, help="tokens per reply (20 as RealToxicityPrompts)"
    ),
    top_p: float = typer.Option(0.9, "--top-p", help="nucleus sampling's p (0.9 as RealToxicityPrompts)"),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="replies generated at once: speed only"),
    prompts: str = typer.Option(
        None,
        "--prompts",
        help="held-out prompts: a dataset folder, JSON(L), CSV or Parquet file (default: shipped)",
    ),
    prompt_column: str = typer.Option(
        "text", "--prompt-column", help="--prompts' text column, e.g. prompt.text"
    ),
    prompt_style: str = typer.Option(
        "request", "--prompt-style", help="how --prompts are given: request, role_play, continuation"
    ),
    questions: str = typer.Option(
        None, "--questions", help="simple questions for the answer rate (a dataset, like --prompts)"
    ),
    question_column: str = typer.Option("question", "--question-column", help="--questions' question column"),
    answer_column: str = typer.Option(
        "answer", "--answer-column", help="--questions' answer column (a text, or a list of accepted ones)"
    ),
    overrides: list[str] = typer.Option([], "--set", help="override a config field: --set release.steps=10"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show progress bars"),
) -> None:
    """RealToxicityPrompts-style toxicity on held-out prompts by every judge: base, rr, rr_fixed, random."""
    from pipeline.bench.methods import TOXICITY_METHODS, parse_methods, require_toxicity_target

    with bench_errors(out_dir):
        chosen = parse_methods(methods, TOXICITY_METHODS)
        if prompts is None and (prompt_column != "text" or prompt_style != "request"):
            raise ConfigError("--prompt-column and --prompt-style describe --prompts: give --prompts too")
        if questions is None and (question_column != "question" or answer_column != "answer"):
            raise ConfigError(
                "--question-column and --answer-column describe --questions: give --questions too"
            )
        cfg = checked_config(config, overrides)
        require_toxicity_target(cfg.target.kind)
        from pipeline.bench.toxicity import Decoding, run_toxicity_bench

        try:
            decoding = Decoding(samples, max_new_tokens, top_p, batch_size)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        results = run_toxicity_bench(
            cfg, out_dir, chosen, seeds, decoding, prompts, prompt_column, prompt_style, questions,
            progress, log=err.print, question_columns=(question_column, answer_column),
        )  # fmt: skip
    _print_bench(results, out_dir, "toxicity")


@bench.command("code")
def bench_code(
    config: Path = typer.Option(
        ..., "--config", help="run config with a code target, e.g. configs/code.yaml"
    ),
    out_dir: Path = typer.Option(..., "--out", help="folder for results.json, report.md, plot.png"),
    methods: str = typer.Option(
        "base,rr,rr_fixed", "--methods", help="comma-separated: base, rr, rr_fixed, random"
    ),
    seeds: int = typer.Option(1, "--seeds", min=1, help="runs of the whole pipeline; figures are mean ± sd"),
    samples: int = typer.Option(5, "--samples", min=1, help="sampled replies per task, for pass@k"),
    max_new_tokens: int = typer.Option(160, "--max-new-tokens", min=1, help="tokens per reply"),
    overrides: list[str] = typer.Option([], "--set", help="override a config field: --set release.steps=10"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show progress bars"),
) -> None:
    """Held-out programming tasks run with their unit tests in a sandbox: pass@1, pass@k, code share, retain."""
    from pipeline.bench.methods import CODE_METHODS, parse_methods, require_target

    with bench_errors(out_dir):
        chosen = parse_methods(methods, CODE_METHODS)
        cfg = checked_config(config, overrides)
        require_target(cfg.target.kind, "code")
        from pipeline.bench.code import CodeDecoding, run_code_bench

        decoding = CodeDecoding(samples=samples, max_new_tokens=max_new_tokens)
        results = run_code_bench(cfg, out_dir, chosen, seeds, decoding, progress, log=err.print)
    _print_bench(results, out_dir, "code")


@bench.command("entity")
def bench_entity(
    config: Path = typer.Option(
        ..., "--config", help="run config with an entity target, e.g. configs/entity.yaml"
    ),
    out_dir: Path = typer.Option(..., "--out", help="folder for results.json, report.md, plot.png"),
    methods: str = typer.Option(
        "base,rr,rr_fixed", "--methods", help="comma-separated: base, rr, rr_fixed, random"
    ),
    seeds: int = typer.Option(1, "--seeds", min=1, help="runs of the whole pipeline; figures are mean ± sd"),
    overrides: list[str] = typer.Option([], "--set", help="override a config field: --set release.steps=10"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show progress bars"),
) -> None:
    """Prompted NER on held-out sentences: precision, recall and F1 per entity type, and retain figures."""
    from pipeline.bench.methods import ENTITY_METHODS, parse_methods, require_target

    with bench_errors(out_dir):
        chosen = parse_methods(methods, ENTITY_METHODS)
        cfg = checked_config(config, overrides)
        require_target(cfg.target.kind, "entity")
        from pipeline.bench.entity import run_entity_bench

        results = run_entity_bench(cfg, out_dir, chosen, seeds, progress, log=err.print)
    _print_bench(results, out_dir, "entity")


@bench.command("reveal")
def bench_reveal(
    config: Path = typer.Option(
        ..., "--config", help="run config whose model, target and reveal settings to use"
    ),
    out_dir: Path = typer.Option(..., "--out", help="folder for results.json, report.md, plot.png"),
    methods: str = typer.Option("neuralucb,random,best_seed", "--methods", help="comma-separated methods"),
    repeats: int = typer.Option(3, "--repeats", help="runs of each method, with other sampling seeds"),
    overrides: list[str] = typer.Option([], "--set", help="override a config field: --set reveal.rounds=4"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show progress bars"),
) -> None:
    """Instruction choice for one iteration: NeuralUCB against random choice and the best seed instruction."""
    from pipeline.bench.methods import REVEAL_METHODS, parse_methods

    with bench_errors(out_dir):
        chosen = parse_methods(methods, REVEAL_METHODS)
        cfg = checked_config(config, overrides)
        from pipeline.bench.reveal import run_reveal_bench

        results = run_reveal_bench(cfg, out_dir, chosen, repeats, progress, log=err.print)
    _print_bench(results, out_dir, "reveal")


@bench.command("train")
def bench_train(
    config: Path = typer.Option(..., "--config", help="run config whose model and release settings to use"),
    out_dir: Path = typer.Option(..., "--out", help="folder for results.json"),
    overrides: list[str] = typer.Option([], "--set", help="override a config field: --set release.steps=10"),
    repeats: int = typer.Option(
        3, "--repeats", help="rounds of every arm, interleaved; rows report the median"
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show progress bars"),
) -> None:
    """Release training throughput and peak memory against a plain PEFT + transformers Trainer loop."""
    with bench_errors(out_dir):
        cfg = checked_config(config, overrides)
        from pipeline.bench.train import run_train_bench

        results = run_train_bench(cfg, out_dir, repeats, progress, log=err.print)
    table = Table(title=f"release training throughput ({results['device']})")
    for column in ("arm", "tokens", "seconds", "frozen s", "tok/s", "x Trainer", "peak MB"):
        table.add_column(column, justify="left" if column == "arm" else "right")
    for row in results["rows"]:
        table.add_row(
            row["arm"], str(row["tokens"]), f"{row['seconds']:.2f}",
            f"{row['reference_seconds']:.2f}" if "reference_seconds" in row else "",
            f"{row['tok_per_s']:.0f}",
            f"{row['ratio_to_trainer']:.2f}", f"{row['peak_mb']:.0f}",
        )  # fmt: skip
    out.print(table)
    out.print(f"results: {out_dir / 'results.json'}")


@bench.command("sampling")
def bench_sampling(
    config: Path = typer.Option(
        ..., "--config", help="run config whose model and generation settings to use"
    ),
    out_dir: Path = typer.Option(..., "--out", help="folder for results.json and report.md"),
    overrides: list[str] = typer.Option(
        [], "--set", help="override a config field: --set model.dtype=bfloat16"
    ),
    prompts: int = typer.Option(64, "--prompts", min=1, help="instructions per arm"),
    new_tokens: int = typer.Option(64, "--new-tokens", min=1, help="tokens generated per reply"),
    replies: int = typer.Option(
        1, "--replies", min=1, help="replies to each instruction (the loop asks several)"
    ),
    backends: str = typer.Option("hf,vllm,openai", "--backends", help="comma-separated: hf, vllm, openai"),
    python: Path = typer.Option(None, "--python", help="a Python with vLLM (default: .venv-vllm/bin/python)"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show progress bars"),
) -> None:
    """Sampling throughput of hf, in-process vLLM and a vLLM server, without and with adapters."""
    from pipeline.sampling.base import SamplerError

    chosen = tuple(b.strip() for b in backends.split(",") if b.strip())
    unknown = set(chosen) - {"hf", "vllm", "openai"}
    with bench_errors(out_dir):
        if unknown or not chosen:
            raise ConfigError(f"--backends: expected some of hf, vllm, openai, got {backends!r}")
        cfg = load_config(config, overrides)
        check_model_path(cfg.model)
        from pipeline.bench.sampling import run_sampling_bench

        try:
            results = run_sampling_bench(
                cfg, out_dir, prompts, new_tokens, chosen, python, progress, err.print, replies
            )
        except SamplerError as exc:
            raise ConfigError(str(exc)) from None
    table = Table(
        title=f"sampling: {prompts} prompts x {replies} replies x {new_tokens} tokens ({results['device']})"
    )
    for column in ("backend", "engine", "adapter", "tok/s", "x hf", "first s", "adapter s", "peak MB"):
        table.add_column(column, justify="left" if column in ("backend", "engine", "adapter") else "right")
    for row in results["rows"]:
        ratio = "" if row["ratio_to_hf"] is None else f"{row['ratio_to_hf']:.2f}"
        table.add_row(
            row["backend"], row["engine"], row["adapter"], f"{row['tok_per_s']:.0f}", ratio,
            f"{row['first_batch_s']:.2f}", f"{row['adapter_s']:.2f}", f"{row['peak_mb']:.0f}",
        )  # fmt: skip
    out.print(table)
    out.print(f"results: {out_dir / 'results.json'}, {out_dir / 'report.md'}")


# The columns a terminal has room for; report.md holds every one.
TERMINAL_COLUMNS = {
    "planted": ("forget_probe_acc", "retain_probe_acc", "paraphrase_probe_acc", "prefill_probe_acc",
                "relearn_acc", "quantized_forget_acc", "forget_quality", "utility_ppl_ratio"),
    "toxicity": ("toxicity_probability", "expected_max_toxicity", "utility_ppl_ratio", "answer_rate"),
}  # fmt: skip


def _print_bench(results: dict, out_dir: Path, kind: str) -> None:
    from pipeline.bench import code, entity, planted, reveal
    from pipeline.bench.results import metric_cell, table_rows

    columns = {"planted": planted.COLUMNS, "toxicity": results.get("columns"), "reveal": reveal.COLUMNS,
               "code": code.COLUMNS, "entity": entity.columns()}[kind]  # fmt: skip
    if kind in TERMINAL_COLUMNS:  # a toxicity column is `judges.<judge>.<figure>`
        columns = [c for c in columns if c[0].rsplit(".", 1)[-1] in TERMINAL_COLUMNS[kind]]
    table = Table(title=f"{kind} benchmark (every column: report.md)")
    table.add_column("model", no_wrap=True)
    for _, title, _ in columns:
        table.add_column(title, justify="right")
    for label, metrics in table_rows(results):
        table.add_row(label, *[metric_cell(metrics, key, fmt) or "n/a" for key, _, fmt in columns])
    out.print(table)
    out.print(f"results: {out_dir / 'results.json'}, {out_dir / 'report.md'}, {out_dir / 'plot.png'}")
