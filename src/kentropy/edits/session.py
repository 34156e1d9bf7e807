"""The path every weight-editing command shares: its options, then one checkpoint loaded, H measured on
documents before and after an in-place edit, and the edited model saved as an HF directory with a JSON
report (atomically). `kentropy resuscitate` and `kentropy intervene` are this path with another edit:

    e, done, fields = edit_checkpoint(cfg, "resuscitate", lambda model, cbar: resuscitate(model, cbar, ...))
    e.save(cfg.out, "resuscitation.json", done.to_json() | fields)

The edits name their arguments (`ArgumentError`: `threshold=0: selects no neuron`); the CLI shows the
field of the command's config as its flag (`--threshold 0: ...`, `kentropy.runtime.options`).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from kentropy.errors import KentropyError
from kentropy.io import check_out_dir, write_dir_atomic, write_json
from kentropy.measurement.documents import load_texts
from kentropy.measurement.workflow import load_coefficients, measure_ids, tokenize
from kentropy.models.loading import gguf_fields, load_model, load_tokenizer, parse_checkpoints, pick_device
from kentropy.runtime.options import device_option, option, require, to_dict, trust_remote_code_option


@dataclass
class EditConfig:
    """The options of every weight-editing command: the checkpoint, where Cbar and H come from, the output."""

    model: str = option(help="Model dir or hub id (NAME@rev for one revision).", argument=True)
    out: str = option(help="Output directory: the edited model as an HF directory (tokenizer included) plus the JSON report.")
    data: str | None = option(None, "Documents to measure Cbar on (where the edit uses it), and H before and after (.jsonl, .txt, dataset).")
    coefficients: str | None = option(None, "Cbar from `kentropy measure --coefficients-out` (a .safetensors file or a dir with "
                                            "one), instead of measuring it on --data.")
    max_instances: int | None = option(None, "Use at most this many documents.")
    seq_len: int = option(1024, "Truncate each document to this many tokens.")
    batch_size: int = option(8, "Documents per forward pass.")
    activation: str = option("abs", "Coefficient magnitude: abs or relu.")
    overwrite: bool = option(False, "Replace an existing output directory.")
    device: str = device_option()
    trust_remote_code: bool = trust_remote_code_option()

    def __post_init__(self) -> None:
        require(self, "max_instances", "seq_len", "batch_size", low=0, low_open=True)
        if self.activation not in ("abs", "relu"):
            raise KentropyError(f"--activation {self.activation}: choose abs or relu")
        check_out_dir(self.out)


@contextmanager
def check_out_free(out: str, overwrite: bool) -> Path:
    path = Path(out)
    if path.exists() and any(path.iterdir()) and not overwrite:
        raise KentropyError(f"--out {path}: exists and is not empty (use --overwrite)")
    return path


@dataclass
class Edit:
    ckpt: object  # kentropy.models.loading.ModelRef
    tok: object
    model: object
    ids: list[list[int]] | None  # the documents H is measured on (None: no --data)
    activation: str
    batch_size: int

    def measure(self):
        """H (a `Measurement`, Cbar included) of the model as it is now, on the documents; None without them."""
        if self.ids is None:
            return None
        return measure_ids(self.model, self.ids, self.tok.pad_token_id, activation=self.activation,
                           batch_size=self.batch_size, name=str(self.ckpt), progress=True)

    def save(self, out: str, name: str, report: dict) -> None:
        """The edited model, its tokenizer and `name` (the report) as one directory that appears at once."""

        def write(d: Path) -> None:
            self.model.save_pretrained(d)
            self.tok.save_pretrained(d)
            write_json(d / name, report)

        write_dir_atomic(Path(out), write)


def open_edit(cfg: EditConfig, command: str) -> Edit:
    """Tokenizer, documents (tokenized: bad ones fail before any weights load), then the model."""
    ckpts = parse_checkpoints([cfg.model])
    if len(ckpts) != 1:
        raise KentropyError(f"MODEL {cfg.model}: {command} takes one checkpoint")
    ckpt = ckpts[0]
    tok = load_tokenizer(ckpt, cfg.trust_remote_code)
    ids = tokenize(tok, load_texts(cfg.data, cfg.max_instances), cfg.seq_len) if cfg.data else None
    loaded = load_model(ckpt, device=pick_device(cfg.device), trust_remote_code=cfg.trust_remote_code)
    return Edit(ckpt, tok, loaded, ids, cfg.activation, cfg.batch_size)


def entropy_fields(before, after, data: str | None) -> dict:
    """H before and after (total and per layer), both measured on `data`; null without it."""
    return {
        "knowledge_entropy_before": before.knowledge_entropy if before else None,
        "knowledge_entropy_after": after.knowledge_entropy if after else None,
        "knowledge_entropy_per_layer_before": before.knowledge_entropy_per_layer if before else None,
        "knowledge_entropy_per_layer_after": after.knowledge_entropy_per_layer if after else None,
        "measured_on": data,
    }


def edit_checkpoint(cfg: EditConfig, command: str, edit: Callable, *, check: Callable | None = None,
                    uses_cbar: bool = True) -> tuple[Edit, object, dict]:
    """The one path of every editing command. --out must be free; a Cbar file is read first (a bad one fails
    before any model loads); tokenizer, documents, model; `check(model, cbar)` tries a Cbar file against the
    model before H is measured; H before; `edit(model, cbar)` in place, with Cbar from the file or else
    measured before (None where the edit uses none, `uses_cbar=False`); H after.

    Returns the session (to save), what `edit` returned, and the report fields every command writes: the
    checkpoint, where Cbar came from, H before and after, the config.
    """
    check_out_free(cfg.out, cfg.overwrite)
    cbar = load_coefficients(cfg.coefficients) if cfg.coefficients else None
    e = open_edit(cfg, command)
    if check is not None and cbar is not None:
        check(e.model, cbar)
    before = e.measure()
    if cbar is None and before is not None and uses_cbar:
        cbar = before.coefficients
    result = edit(e.model, cbar)
    after = e.measure()
    fields = {"model": e.ckpt.name, "revision": e.ckpt.revision, **gguf_fields(e.ckpt),
              "coefficients_from": cfg.coefficients or (cfg.data if uses_cbar else None),
              **entropy_fields(before, after, cfg.data), "config": to_dict(cfg)}
    return e, result, fields
