"""Settings-as-code files (request types, metrics): reading YAML with errors that name the file and line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class _Loader(yaml.SafeLoader):
    """Safe YAML that leaves dates as text, so a bad date is a field error rather than a crash."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _yaml_error(filename: str, exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    detail = f"{problem} ({context})" if context else problem
    return f"{filename}: {where}YAML syntax error: {detail}"


def read_yaml(source: str | Path, *, filename: str | None, default_name: str) -> tuple[Any, str, str | None]:
    """(document, the file's name for messages, the syntax problem or None); a Path is read, a str is YAML."""
    if isinstance(source, Path):
        filename = filename or str(source)
        text = source.read_text(encoding="utf-8")
    else:
        text = source
    filename = filename or default_name
    try:
        return yaml.load(text, Loader=_Loader), filename, None  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        return None, filename, _yaml_error(filename, exc)
    except ValueError as exc:  # a value YAML itself cannot build
        return None, filename, f"{filename}: YAML error: {exc}"
