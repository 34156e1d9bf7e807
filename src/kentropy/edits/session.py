"""The path every weight-editing command shares: load one checkpoint, measure H on documents before
and after an in-place edit, save the edited model as an HF directory with a JSON report (atomically).

Used by `kentropy resuscitate` and `kentropy intervene`:

    e = open_edit(cfg.model, data=..., ...)   # checks --out first; tokenizer, documents, model
    before = e.measure()                       # None without --data
    ...edit e.model in place...
    e.save(cfg.out, "report.json", report)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kentropy.errors import KentropyError


def check_out_free(out: str, overwrite: bool) -> Path:
    path = Path(out)
    if path.exists() and any(path.iterdir()) and not overwrite:
        raise KentropyError(f"--out {path}: exists and is not empty (use --overwrite)")
    return path


@dataclass
class Edit:
    ckpt: object  # kentropy.models.loading.Checkpoint
    tok: object
    model: object
    ids: list[list[int]] | None  # the documents H is measured on (None: no --data)
    activation: str
    batch_size: int

    def measure(self):
        """H (a `Measurement`, Cbar included) of the model as it is now, on the documents; None without them."""
        from kentropy.measurement.workflow import measure_ids

        if self.ids is None:
            return None
        return measure_ids(self.model, self.ids, self.tok.pad_token_id, activation=self.activation,
                           batch_size=self.batch_size, name=str(self.ckpt), progress=True)

    def save(self, out: str, name: str, report: dict) -> None:
        """The edited model, its tokenizer and `name` (the report) as one directory that appears at once."""
        from kentropy.io import write_dir_atomic, write_json

        def write(d: Path) -> None:
            self.model.save_pretrained(d)
            self.tok.save_pretrained(d)
            write_json(d / name, report)

        write_dir_atomic(Path(out), write)


def open_edit(model: str, *, command: str, data: str | None, max_instances: int | None, seq_len: int, batch_size: int,
              activation: str, device: str, trust_remote_code: bool) -> Edit:
    """Tokenizer, documents (tokenized: bad ones fail before any weights load), then the model."""
    from kentropy.measurement.documents import load_texts
    from kentropy.measurement.workflow import tokenize
    from kentropy.models.loading import load_model, load_tokenizer, parse_checkpoints, pick_device

    ckpts = parse_checkpoints([model])
    if len(ckpts) != 1:
        raise KentropyError(f"MODEL {model}: {command} takes one checkpoint")
    ckpt = ckpts[0]
    tok = load_tokenizer(ckpt, trust_remote_code)
    ids = tokenize(tok, load_texts(data, max_instances), seq_len) if data else None
    loaded = load_model(ckpt, device=pick_device(device), trust_remote_code=trust_remote_code)
    return Edit(ckpt, tok, loaded, ids, activation, batch_size)


def entropy_fields(before, after, data: str | None) -> dict:
    """H before and after (total and per layer), both measured on `data`; null without it."""
    return {
        "knowledge_entropy_before": before.knowledge_entropy if before else None,
        "knowledge_entropy_after": after.knowledge_entropy if after else None,
        "knowledge_entropy_per_layer_before": before.knowledge_entropy_per_layer if before else None,
        "knowledge_entropy_per_layer_after": after.knowledge_entropy_per_layer if after else None,
        "measured_on": data,
    }
