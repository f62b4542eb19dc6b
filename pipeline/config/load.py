"""Loading a run config from YAML, with `--set` overrides, into one error line that names the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from pipeline.config.base import PROJECT_ROOT
from pipeline.config.run import RunConfig
from pipeline.errors import ConfigError
from pipeline.files import read_text


def _first_error(error: ValidationError) -> str:
    item = error.errors()[0]
    field = ".".join(str(part) for part in item["loc"]) or "config"
    message = item["msg"]
    if item["type"] == "extra_forbidden":
        message = "unknown field"
    return f"{field}: {message}"


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping: YAML's own reader keeps the
    last, so a second `release:` block would silently drop every setting of the first."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults` may be overridden
                continue
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str | int | float | bool) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"`{key}` is given twice (line {seen[key]} and line "
                    f"{key_node.start_mark.line + 1}): merge the two", key_node.start_mark,
                )  # fmt: skip
            if isinstance(key, str | int | float | bool):
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path, field: str) -> Any:
    """A YAML file's data; a missing, binary or malformed file, or one giving a key twice, is a
    one-line ConfigError naming `field`."""
    text = read_text(path, field)
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{field}: {path}: invalid YAML{_yaml_problem(exc)}") from None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """Where and what, on one line (the parser's own message spans several)."""
    mark = getattr(exc, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
    problem = getattr(exc, "problem", None)
    if problem is None:  # a ReaderError (a control character, say) has no parts: fold its message
        return f"{where}: {' '.join(str(exc).split())}"
    context = getattr(exc, "context", None)
    return f"{where}: {context + ', ' if context else ''}{problem}"


def parse_value(text: str, key: str = "value") -> Any:
    """A `--set` value is YAML, so numbers, booleans and lists come out typed."""
    if not text.strip():
        return ""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"--set {key}: {text!r} is not a YAML value{_yaml_problem(exc)}; quote a text: --set '{key}=\"...\"'"
        ) from None


def apply_override(data: dict, assignment: str) -> None:
    """Apply one `a.b=value` override to the raw config dict."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected KEY=VALUE, e.g. release.steps=10")
    key, value = assignment.split("=", 1)
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {part} is not a section")
        node = child
    node[parts[-1]] = parse_value(value, key.strip())


def load_config(path: str | Path, overrides: list[str] = (), **fields: Any) -> RunConfig:
    """Read a YAML config, apply `a.b=value` overrides and keyword fields, validate everything."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    data = read_yaml(path, "config")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the config must be a mapping of fields, got {type(data).__name__}")
    for assignment in overrides:
        apply_override(data, assignment)
    data.update({k: v for k, v in fields.items() if v is not None})
    return validate_config(data, source=str(path))


def validate_config(data: dict, source: str = "config") -> RunConfig:
    try:
        config = RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_first_error(exc)}") from None
    check_paths(config, source)
    return config


def check_paths(config: RunConfig, source: str) -> None:
    """Files the run will read must exist before anything is written. A missing one is named as
    written in the config, with where a relative path was looked for (`RunConfig.resolve`)."""
    needed = [
        ("reveal.prompts", config.reveal_prompts_path(resolve=False)),
        ("evaluate.eval_prompts", config.eval_prompts_path(resolve=False)),
        *[("sample.retain_prompts", path) for path in config.sample.retain_prompts],
        ("reveal.rewrite_prompts", config.reveal.rewrite_prompts),
    ]
    if config.model.plant is not None:
        needed.append(("model.plant.spec", config.model.plant.spec))
        config.model.plant.spec = config.resolve(config.model.plant.spec)
    else:
        needed.append(("evaluate.retain_text", config.evaluate.retain_text))
    for field, given in needed:
        if config.resolve(given).is_file():
            continue
        where = "" if given.is_absolute() else f" (looked in {Path.cwd()} and in {PROJECT_ROOT})"
        raise ConfigError(f"{source}: {field}: file not found: {given}{where}")
