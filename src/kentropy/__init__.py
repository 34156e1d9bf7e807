"""kentropy: knowledge entropy of language models (Kim et al., ICLR 2025) and what it governs.

The rooms, bottom to top (a room imports only rooms below it):

    errors.py, io.py  the one exception type (and its ArgumentError); atomic writes, temp names and their cleanup
    runtime/          what every command's run stands on: options, argument checks, console, locks, series, ranks, RNG
    models/           the family registry, loading, fit checks, the neuron map
    measurement/      knowledge, attention and next-token entropy (Eq. 2, 3), capture hooks, diagnostics
    edits/            Algorithm 1, ReDo, shrink-perturb: weight edits through the neuron map
    knowledge/        fictional knowledge: generate, plan injections, probe (Chang et al. 2024)
    evaluation/       downstream scores D through lm-evaluation-harness; acquisition A, forgetting F
    circuits/         knowledge circuits with EAP-IG (Ou et al. 2025)
    training/         continual pretraining with injected knowledge, FSDP2/DCP, RunDir
    lab/              the offline laboratory (its own map in lab/__init__.py)
    cli/              the `kentropy` command

The Python API mirrors the CLI, one function per command (functions never share a room's name):

    kentropy.measure(model, tokenizer, texts, ...)            # kentropy measure
    kentropy.resuscitate(model, coefficients, ratio, amplify)  # kentropy resuscitate (in place, undoable)
    kentropy.probe(model, tokenizer, entries, plan=...)        # kentropy probe
    kentropy.train(kentropy.TrainConfig(...))                  # kentropy train
    kentropy.evaluate(model, tokenizer, tasks, ...)            # kentropy evaluate
    kentropy.EntropyMonitor(tokenizer, texts, every=N)         # measurement inside a training loop

Each checks its arguments before any work and raises a `KentropyError` naming the argument as you wrote
it (an `ArgumentError` for one argument: `batch_size=0: must be >= 1`); a list of documents or names is a
list, never one str split into characters.
"""

from kentropy.errors import ArgumentError, KentropyError
from kentropy.evaluation.downstream import evaluate
from kentropy.evaluation.outcomes import acquisition, forgetting
from kentropy.knowledge import generate_knowledge, make_plan, probe
from kentropy.measurement.monitor import EntropyMonitor
from kentropy.measurement.workflow import Measurement, measure
from kentropy.edits.resuscitate import resuscitate
from kentropy.training.config import TrainConfig
from kentropy.training.loop import train

__all__ = ["KentropyError", "ArgumentError", "Measurement", "measure", "resuscitate", "probe", "generate_knowledge", "make_plan",
           "acquisition", "forgetting", "train", "TrainConfig", "evaluate", "EntropyMonitor"]
__version__ = "0.1.0"
