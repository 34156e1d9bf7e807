"""The lab's shared stages: the tokenizer reads the new domain that continual learning reads, pretraining
text is prefixes of one stream, and the 'seen' rows are the trainer's own first rows."""

import dataclasses
from pathlib import Path

import torch

from kentropy.lab.cache import Done, Stages
from kentropy.lab.config import LabConfig, SeedOffset
from kentropy.lab.stages import corpora as corpora_mod
from kentropy.lab.stages import tokenizer as tokenizer_mod

SMALL = dict(entities=100, tokenizer_vocab=300, tokenizer_docs=8, measure_docs=3, continual_steps=2, continual_batch=2,
             injection_rounds=1, knowledge_paraphrase=1, knowledge_once=0, continual_seq_len=64, seq_len=64, batch_size=2,
             pretrain_tokens=640, checkpoints=2, hidden=16, heads=2, layers=1, ffn=32, tasks_per_kind=4)


def test_tokenizer_reads_the_new_domain_of_the_world_seed(tmp_path, monkeypatch):
    """The new domain the tokenizer trains on is built from world_seed, as the continual corpus builds it."""
    seen = []
    real = tokenizer_mod.new_domain_documents

    def spy(seed, n_docs, *, domain_seed, **kw):
        seen.append((seed, domain_seed))
        return real(seed, n_docs, domain_seed=domain_seed, **kw)

    monkeypatch.setattr(tokenizer_mod, "new_domain_documents", spy)
    cfg = LabConfig(**SMALL, world_seed=7)
    done = tokenizer_mod.tokenizer_stage(Stages(tmp_path), cfg, vocab=300)
    assert seen == [(SeedOffset.TOKENIZER + 7, 7)] and Path(done.result["path"]).is_dir() and done.result["vocab"] <= 300


class WordTok:
    """A tokenizer of whitespace words (enough for counting)."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": text.split()}


def test_pretraining_text_is_prefixes_of_one_stream(tmp_path):
    docs = ["a b c", "d e", "f g h i", "j", "k l m"]  # 3+1, 2+1, 4+1, 1+1, 3+1 tokens with eos: cum 4, 7, 12, 14, 18
    files = corpora_mod.write_prefixes(tmp_path, "pretrain", iter(docs), WordTok(), [7, 13, 5])
    assert {k: (v["docs"], v["tokens"]) for k, v in files.items()} == {"5": (2, 7), "7": (2, 7), "13": (4, 14)}
    assert Path(files["13"]["path"]).read_text() == "a b c\nd e\nf g h i\nj\n"
    assert Path(files["5"]["path"]).read_text() == "a b c\nd e\n"


def test_first_rows_are_the_trainers_first_rows(tmp_path):
    """`first_rows` rebuilds, from the corpus, the rows the trainer's first batches hold."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from kentropy.lab.stages.pretrain import first_rows
    from kentropy.lab.text.bpe import train_bpe
    from kentropy.training.config import TrainConfig
    from kentropy.training.loop import setup

    text = [f"document {i} says that the river {i % 7} flows into lake {i % 5} near town {i % 3}." for i in range(200)]
    tok = train_bpe(text, vocab_size=300)
    init = tmp_path / "init"
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2, pad_token_id=tok.pad_token_id))
    model.save_pretrained(init)
    tok.save_pretrained(init)
    data = tmp_path / "text.txt"
    data.write_text("\n".join(text) + "\n")
    cfg = TrainConfig(model=str(init), data=str(data), out=str(tmp_path / "run"), steps=30, batch_size=4, micro_batch=4,
                      seq_len=16, seed=3, epochs=3, eval_every=0, save_every=0, device="cpu")
    state = setup(cfg)
    n = 10
    assert torch.equal(first_rows(init, cfg, n), state.rows[state.order[:n]])
    assert not torch.equal(first_rows(init, dataclasses.replace(cfg, seed=4), n), state.rows[state.order[:n]])


def test_a_worker_done_stage_is_found_by_the_parent(tmp_path):
    """Stages run in a worker (no timings) are the same cached stages the parent finds."""
    fn = lambda d: {"x": 1}  # noqa: E731
    a = Stages(tmp_path, record_timings=False).run("eps", {"k": 1}, fn)
    b = Stages(tmp_path).run("eps", {"k": 1}, lambda d: {"x": 2})
    assert isinstance(a, Done) and a.dir == b.dir and b.result == {"x": 1}


# ---- a stage killed half way through a write; a lab moved or copied -------------------------
STAGE_MODULE = '''
import os, time
from kentropy.io import write_dir_atomic, write_json


def fn(d):
    write_json(d / "first.json", {"a": 1})

    def save(tmp):
        (tmp / "w.bin").write_bytes(b"weights")
        if os.environ.get("HANG"):
            print("writing", flush=True)
            time.sleep(120)  # SIGKILLed here

    write_dir_atomic(d / "model", save)
    return {"model": str(d / "model"), "first": str(d / "first.json")}
'''

RUN_STAGE = "import sys; from pathlib import Path; import slow_stage; from kentropy.lab.cache import Stages; " \
            "Stages(Path(sys.argv[1])).run('slow', {'k': 1}, slow_stage.fn)"


def test_a_stage_killed_mid_write_leaves_nothing_after_the_next_run(tmp_path, monkeypatch, capsys):
    import os
    import signal
    import subprocess
    import sys

    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "slow_stage.py").write_text(STAGE_MODULE)
    root = tmp_path / "lab"
    src = Path(__file__).resolve().parents[1] / "src"
    env = dict(os.environ, PYTHONPATH=f"{src}{os.pathsep}{tmp_path / 'code'}", HANG="1")
    p = subprocess.Popen([sys.executable, "-c", RUN_STAGE, str(root)], env=env, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "writing"
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    (d,) = (root / "stages").iterdir()
    assert any(".tmp-" in x.name for x in d.iterdir()) and not (d / "result.json").exists()  # the kill's leftover

    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    import slow_stage

    done = Stages(root).run("slow", {"k": 1}, slow_stage.fn)
    assert "1 interrupted writes removed" in capsys.readouterr().err
    assert done.dir == d and (d / "model" / "w.bin").read_bytes() == b"weights"
    assert [x for x in root.rglob("*") if ".tmp" in x.name] == []  # nothing of the killed write is left


def test_a_moved_lab_finds_its_stages_and_reads_only_its_own_files(tmp_path):
    """Stage configs and results keep paths relative to the lab: moved elsewhere, the lab's stages are cached
    under the same hashes, and their paths point into the lab where it is now."""
    import json
    import shutil

    def make(d):
        (d / "x.txt").write_text("x")
        return {"file": str(d / "x.txt"), "files": [str(d / "x.txt")], "name": "not a path"}

    old = Stages(tmp_path / "a")
    first = old.run("maker", {"k": 1}, make)
    reader = lambda d: {"read": Path(first.result["file"]).read_text()}  # noqa: E731
    second = old.run("reader", {"input": first.result["file"]}, reader)
    stored = json.loads((first.dir / "result.json").read_text())
    assert stored == {"file": f"stages/{first.dir.name}/x.txt", "files": [f"stages/{first.dir.name}/x.txt"], "name": "not a path"}
    assert json.loads((second.dir / "config.json").read_text()) == {"input": f"stages/{first.dir.name}/x.txt"}

    shutil.move(tmp_path / "a", tmp_path / "b")
    new = Stages(tmp_path / "b")
    moved = new.run("maker", {"k": 1}, lambda d: {"ran": "again"})
    assert moved.hash == first.hash and moved.result["file"] == str(tmp_path / "b" / "stages" / first.dir.name / "x.txt")
    assert new.run("reader", {"input": moved.result["file"]}, reader).hash == second.hash  # the same config, where it is
