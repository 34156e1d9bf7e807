"""Documents for measurement: .jsonl (field `text`), .txt (one per line), or a `datasets` dataset."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from kentropy.errors import KentropyError
from kentropy.io import read_text


def sample_text_path() -> Path:
    """A small shipped corpus (one document per line) for tests, examples and benchmarks."""
    return Path(str(resources.files("kentropy") / "data" / "sample.txt"))


def load_texts(source: str, max_instances: int | None = None, split: str = "train") -> list[str]:
    """Read documents from a file or a `datasets` name/dir; at most `max_instances` of them."""
    path = Path(source)
    if path.suffix == ".jsonl":
        texts = _jsonl(path, max_instances)
    elif path.suffix == ".txt":
        texts = _txt(path, max_instances)
    elif path.exists() or "/" in source or not path.suffix:
        texts = _dataset(source, split, max_instances)
    else:
        raise KentropyError(f"--data {source}: expected a .jsonl, a .txt, or a dataset name/dir")
    if not texts:
        raise KentropyError(f"--data {source}: no documents")
    return texts


def _need_file(path: Path) -> None:
    if not path.is_file():
        raise KentropyError(f"--data {path}: file not found")


def _jsonl(path: Path, limit: int | None) -> list[str]:
    _need_file(path)
    texts = []
    with path.open("rb") as f:
        for n, raw in enumerate(f, 1):
            if limit is not None and len(texts) >= limit:
                break
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise KentropyError(f"{path}:{n}: not UTF-8 text (byte 0x{raw[e.start]:02x})") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise KentropyError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise KentropyError(f"{path}:{n}: no string field 'text'")
            texts.append(row["text"])
    return texts


def _txt(path: Path, limit: int | None) -> list[str]:
    _need_file(path)
    lines = [line for line in read_text(path, "--data").splitlines() if line.strip()]  # blank lines are not documents
    return lines[:limit] if limit is not None else lines


def _dataset(source: str, split: str, limit: int | None) -> list[str]:
    import datasets

    try:
        if Path(source).is_dir() and any(Path(source).glob("dataset_info.json")):
            ds = datasets.load_from_disk(source)
            if isinstance(ds, datasets.DatasetDict):
                ds = ds[split]
        else:
            ds = datasets.load_dataset(source, split=split)
    except KentropyError:
        raise
    except Exception as e:  # datasets raises many types for a missing/unreachable dataset
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise KentropyError(f"--data {source}: cannot load dataset ({first})") from None
    if "text" not in ds.column_names:
        raise KentropyError(f"--data {source}: dataset has no 'text' column (columns: {ds.column_names})")
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    return list(ds["text"])
