"""A user's own data: every source kind `read_rows` reads, every way one can be wrong, never the network.

Each test builds and saves its data in tmp_path; `retain.corpus` is followed into a real run's retain set
and into `rr unlearn`'s input check.
"""

import json
import socket
import subprocess
import sys

import pytest
from datasets import Dataset, DatasetDict

from pipeline.config import ConfigError, load_config
from pipeline.datasource import read_rows, read_texts
from pipeline.files import read_jsonl, write_jsonl
from pipeline.run.preflight import preflight
from tests.conftest import run_rr, shared_prefect_api

ROWS = [
    {"prompt": {"text": "The harbour was quiet at dawn.", "toxicity": 0.01}, "id": 1},
    {"prompt": {"text": "  Bread rises in a warm kitchen.  ", "toxicity": None}, "id": 2},
    {"prompt": {"text": "Rain fell on the old stone bridge.", "toxicity": 0.02}, "id": 3},
]
TEXTS = [
    "The harbour was quiet at dawn.",
    "Bread rises in a warm kitchen.",
    "Rain fell on the old stone bridge.",
]


@pytest.fixture(scope="module", autouse=True)
def before_the_network_is_refused():
    """What this test process itself connects to, done before `no_network` refuses connections:
    starting its Prefect server for the runs here (the start waits for its answer), and importing
    peft, which imports bitsandbytes, which asks the hub for a CPU kernel (`rr` blocks that import:
    rr/__init__.py; this test process is not `rr`)."""
    import peft  # noqa: F401

    shared_prefect_api()


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any connection attempt is recorded and refused; each test then checks that none was made."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError(f"test: no network {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    yield
    assert attempts == []


def error(source, columns=None, what="retain.corpus", split=None, texts=False) -> str:
    """The one-line ConfigError that reading `source` raises."""
    with pytest.raises(ConfigError) as caught:
        if texts:
            read_texts(source, columns or "text", what, split)
        else:
            read_rows(source, columns or {"text": "prompt.text"}, what, split)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{what}: ")
    return message


# Every source kind


def test_a_saved_dataset_with_a_nested_column(tmp_path):
    Dataset.from_list(ROWS).save_to_disk(tmp_path / "saved")
    rows = read_rows(tmp_path / "saved", {"text": "prompt.text", "id": "id", "tox": "prompt.toxicity"}, "x")
    assert rows[0] == {"text": "The harbour was quiet at dawn.", "id": 1, "tox": 0.01}
    assert [r["id"] for r in rows] == [1, 2, 3] and rows[1]["tox"] is None
    assert read_texts(str(tmp_path / "saved"), "prompt.text", "x") == TEXTS  # stripped


def test_a_saved_dataset_dict_takes_train_or_the_named_split(tmp_path):
    train, test = Dataset.from_list(ROWS[:2]), Dataset.from_list(ROWS[2:])
    DatasetDict({"test": test, "train": train}).save_to_disk(tmp_path / "dd")
    assert read_texts(tmp_path / "dd", "prompt.text", "x") == TEXTS[:2]
    assert read_texts(tmp_path / "dd", "prompt.text", "x", split="test") == TEXTS[2:]
    DatasetDict({"validation": test}).save_to_disk(tmp_path / "only")
    assert read_texts(tmp_path / "only", "prompt.text", "x") == TEXTS[2:]  # the only split


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".parquet"])
def test_json_jsonl_and_parquet_files(tmp_path, suffix):
    path = tmp_path / f"data{suffix}"
    dataset = Dataset.from_list(ROWS)
    dataset.to_parquet(path) if suffix == ".parquet" else dataset.to_json(path, lines=suffix == ".jsonl")
    assert read_texts(path, "prompt.text", "x") == TEXTS
    assert [r["id"] for r in read_rows(path, {"id": "id"}, "x")] == [1, 2, 3]


def test_a_csv_file(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text('text,label\n"Hello there, friend.",1\nGood morning.,0\n')
    assert read_rows(path, {"t": "text", "y": "label"}, "x") == [
        {"t": "Hello there, friend.", "y": 1},
        {"t": "Good morning.", "y": 0},
    ]


def test_a_folder_of_data_files(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    write_jsonl(folder / "a.jsonl", [{"text": "first"}])
    write_jsonl(folder / "b.jsonl", [{"text": "second"}])
    assert sorted(read_texts(folder, what="x")) == ["first", "second"]


def test_a_dataset_in_the_local_hub_cache(tmp_path, monkeypatch):
    """`owner/name` is read from the HF datasets cache, laid out as `load_dataset` leaves a hub dataset."""
    import datasets
    from datasets.packaged_modules.json.json import Json

    write_jsonl(tmp_path / "h.jsonl", [{"text": "cached one"}, {"text": "cached two"}])
    builder = Json(
        cache_dir=str(tmp_path / "build"), dataset_name="corpus", data_files=str(tmp_path / "h.jsonl")
    )
    builder.download_and_prepare()
    cache = tmp_path / "hf-cache"
    (cache / "someone___corpus" / "default" / "0.0.0").mkdir(parents=True)
    (tmp_path / "build" / "corpus").rename(tmp_path / "moved")
    built = next(p for p in (tmp_path / "moved").rglob("dataset_info.json")).parent
    built.rename(cache / "someone___corpus" / "default" / "0.0.0" / "abc123")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(cache))
    assert read_texts("someone/corpus", what="x") == ["cached one", "cached two"]


def test_plain_txt_and_yaml(tmp_path):
    (tmp_path / "lines.txt").write_text("one text\n\n  another text  \n")
    assert read_texts(tmp_path / "lines.txt", what="x") == ["one text", "another text"]
    (tmp_path / "eval.yaml").write_text(
        "# held out\nkind: x\nprompts:\n  - First prompt.\n  - Second prompt.\n"
    )
    assert read_texts(tmp_path / "eval.yaml", what="x") == ["First prompt.", "Second prompt."]
    assert read_texts(tmp_path / "eval.yaml", "prompts", "x") == ["First prompt.", "Second prompt."]


def test_the_project_s_own_files_read_as_before():
    from pipeline.files import read_lines
    from pipeline.reveal.instructions import read_prompt_list
    from tests.conftest import ROOT

    assert read_texts(ROOT / "data/retain/generic.txt", what="x") == read_lines(
        ROOT / "data/retain/generic.txt", "x"
    )
    eval_file = ROOT / "data/eval/toxicity.yaml"
    assert read_texts(eval_file, "prompts", "x") == [
        p.strip() for p in read_prompt_list(eval_file, "prompts")
    ]


def test_datasets_is_imported_only_when_data_is_read():
    code = "import sys, pipeline.datasource, pipeline.run.preflight, rr.cli; print('datasets' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr[-2000:]


def test_datasets_stays_quiet(tmp_path, capfd):
    Dataset.from_list(ROWS).to_json(tmp_path / "d.jsonl")
    capfd.readouterr()
    read_texts(tmp_path / "d.jsonl", "prompt.text", "x")
    error(tmp_path / "d.jsonl", {"t": "nope"})
    (tmp_path / "bad.json").write_text("{not json")
    error(tmp_path / "bad.json")
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""


# Every error, one line starting with `what`


def test_missing_sources(tmp_path):
    assert error(tmp_path / "none.jsonl") == f"retain.corpus: {tmp_path / 'none.jsonl'} does not exist"
    assert error("./no/such/folder", what="--prompts") == "--prompts: ./no/such/folder does not exist"


def test_an_unknown_hub_name_fails_at_once_offline(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)  # as a user's online session has it
    for name in ("nobody-here/no-such-dataset", "nosuchdataset"):
        message = error(name)
        assert (
            f"retain.corpus: {name} is neither a file or folder nor a dataset in the local Hugging Face"
            in message
        )
        assert "nothing is downloaded" in message
    assert datasets.config.HF_HUB_OFFLINE is False  # offline only while reading


def test_an_unknown_column_names_the_columns_there_nested_ones_dotted(tmp_path):
    Dataset.from_list(ROWS).save_to_disk(tmp_path / "saved")
    assert error(tmp_path / "saved", {"text": "prompt"}) == (
        f"retain.corpus: {tmp_path / 'saved'} has no column 'prompt'; its columns: prompt.text, prompt.toxicity, id"
    )
    (tmp_path / "a.txt").write_text("a\n")
    assert error(tmp_path / "a.txt", {"t": "body"}).endswith("has no column 'body'; its columns: text")


def test_an_unknown_split_names_the_splits(tmp_path):
    DatasetDict({"a": Dataset.from_list(ROWS), "b": Dataset.from_list(ROWS)}).save_to_disk(tmp_path / "dd")
    assert error(tmp_path / "dd").endswith("has no split 'train'; name one of its splits: a, b")
    assert error(tmp_path / "dd", split="test").endswith("has no split 'test'; name one of its splits: a, b")
    Dataset.from_list(ROWS).save_to_disk(tmp_path / "one")
    assert "one dataset without splits (split: 'train')" in error(tmp_path / "one", split="train")
    (tmp_path / "a.txt").write_text("a\n")
    assert "a .txt file, which has no splits" in error(tmp_path / "a.txt", {"t": "text"}, split="train")


def test_a_value_that_is_no_text_names_its_row(tmp_path):
    rows = [{"text": "fine"}, {"text": None}]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert error(tmp_path / "d.jsonl", texts=True, what="--prompts") == (
        f"--prompts: row 2 of {tmp_path / 'd.jsonl'}: column 'text' holds NoneType None, not a text"
    )
    Dataset.from_list(ROWS).save_to_disk(tmp_path / "saved")
    assert "row 1 of" in error(tmp_path / "saved", "id", texts=True) and "holds int 1, not a text" in error(
        tmp_path / "saved", "id", texts=True
    )
    (tmp_path / "p.yaml").write_text("prompts: [fine, 3]\n")
    assert "row 2 of" in error(tmp_path / "p.yaml", texts=True)


def test_empty_sources(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    assert error(tmp_path / "empty.jsonl").endswith("empty.jsonl has no rows")
    (tmp_path / "header.csv").write_text("text,label\n")
    assert error(tmp_path / "header.csv", {"t": "text"}).endswith("header.csv has no rows")
    Dataset.from_dict({"text": []}).save_to_disk(tmp_path / "saved")  # in no shards
    assert error(tmp_path / "saved", {"t": "text"}).endswith("saved has no rows")
    Dataset.from_dict({"text": []}).save_to_disk(tmp_path / "one-shard", num_shards=1)
    assert error(tmp_path / "one-shard", {"t": "text"}).endswith("one-shard has no rows")
    (tmp_path / "blank.txt").write_text("\n  \n")
    assert error(tmp_path / "blank.txt", {"t": "text"}).endswith("blank.txt is empty")
    (tmp_path / "blanks.jsonl").write_text('{"text": " "}\n{"text": ""}\n')
    assert error(tmp_path / "blanks.jsonl", texts=True).endswith("has no non-empty text in column 'text'")
    (tmp_path / "none.yaml").write_text("kind: x\n")
    assert "not a YAML mapping with a list of texts" in error(tmp_path / "none.yaml", {"t": "text"})


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("bad.json", "{not json", "JSON parse error"),
        ("bad.jsonl", '{"text": "a"}\n{"text": \n', "JSON parse error"),
        ("bad.parquet", "not parquet at all", "Parquet"),
        ("bad.csv", 'text\n"never closed\n', "EOF inside string"),
        ("bad.yaml", "prompts: [unclosed\n", "while parsing a flow sequence"),
        ("latin1.txt", b"caf\xe9\n", "can't decode byte 0xe9"),
        (
            "data.xlsx",
            "x",
            "is not a file type this reads (.json, .jsonl, .csv, .parquet, .txt, .yaml, .yml)",
        ),
    ],
)
def test_a_corrupt_file(tmp_path, name, content, expected):
    (tmp_path / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    message = error(tmp_path / name, {"t": "text"})
    assert expected in message and str(tmp_path / name) in message


def test_a_corrupt_saved_dataset(tmp_path):
    Dataset.from_list(ROWS).save_to_disk(tmp_path / "saved")
    next((tmp_path / "saved").glob("*.arrow")).write_bytes(b"xx")
    assert error(tmp_path / "saved").startswith(f"retain.corpus: cannot read {tmp_path / 'saved'}: ")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "state.json").write_text("{}")
    assert "cannot read" in error(tmp_path / "half")


# retain.corpus in a run


TINY = ["sample.samples_per_instruction=1", "sample.top_instructions=1"]


def corpus_config(tmp_path, corpus, *extra):
    return load_config(
        "configs/tiny.yaml",
        [*TINY, f"retain.corpus={corpus}", "retain.column=prompt.text", *extra],
        out=tmp_path / "runs",
    )


def test_corpus_texts_join_the_retain_set_through_the_sample_stage(tmp_path, cache_dir, one_thread):
    from pipeline.run.loop import prepare_run_dir
    from pipeline.run.sample_stage import corpus_rows, sample
    from pipeline.run.state import RunState

    texts = [f"Corpus line {i}: the tide turned and the gulls went out to sea." for i in range(20)]
    texts.append("Mira Castellane was born in a lighthouse.")  # the target: left out of the retain set
    Dataset.from_list([{"prompt": {"text": t}} for t in texts]).to_parquet(tmp_path / "corpus.parquet")
    state = RunState(corpus_config(tmp_path, tmp_path / "corpus.parquet", "retain.samples=5"), progress=False)
    prepare_run_dir(state)
    assert state.retain_corpus == texts
    write_jsonl(state.files.iteration(1).instructions, [])  # no reveal pulls: the sample stage alone
    sample(state, 1, state.arms[:1])
    retain = read_jsonl(state.files.iteration(1).retain)
    corpus = [r for r in retain if r["stage"] == "corpus"]
    assert len(corpus) == 5 and retain[-5:] == corpus  # after the model's own neutral replies
    for row in corpus:  # the text, as an instruction to continue its opening and the rest as the reply
        assert row["instruction"].startswith("Continue this text: ") and row["iteration"] == 1
        assert f"{row['instruction'].removeprefix('Continue this text: ')} {row['response']}" in texts
        assert row["score"] < state.config.sample.relevance_threshold
    # Drawn with the iteration's seed: the same again, another set in another iteration.
    assert corpus_rows(state, 1) == corpus
    assert [r["instruction"] for r in corpus_rows(state, 2)] != [r["instruction"] for r in corpus]
    state.config.retain.samples = len(texts)
    drawn = corpus_rows(state, 1)
    assert len(drawn) == len(texts) - 1 and not any("lighthouse" in r["response"] for r in drawn)


def test_a_bad_corpus_is_refused_before_the_model_loads(tmp_path):
    Dataset.from_list(ROWS).save_to_disk(tmp_path / "saved")
    cfg = corpus_config(tmp_path, tmp_path / "saved", "retain.column=body")
    with pytest.raises(
        ConfigError, match="^retain.corpus: .* has no column 'body'; its columns: prompt.text"
    ):
        preflight(cfg)
    preflight(corpus_config(tmp_path, tmp_path / "saved"))  # the right column passes


@pytest.mark.parametrize(
    "corpus, expected",
    [
        ("no/such/corpus.jsonl", "retain.corpus: no/such/corpus.jsonl does not exist"),
        (
            "nobody-here/no-such-dataset",
            "retain.corpus: nobody-here/no-such-dataset is neither a file or folder",
        ),
    ],
)
def test_rr_unlearn_refuses_a_bad_corpus_with_exit_2_and_nothing_written(tmp_path, corpus, expected):
    config = tmp_path / "config.yaml"
    config.write_text(f"name: t\ntarget:\n  kind: toxicity\nretain:\n  corpus: {corpus}\n")
    out = tmp_path / "runs"
    result = run_rr("unlearn", config, "--out", out, env={"HF_DATASETS_CACHE": str(tmp_path / "hf-cache")})
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error:") and expected in lines[0]
    assert not out.exists()
