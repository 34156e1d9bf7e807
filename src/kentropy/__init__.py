"""kentropy: knowledge entropy of language models (Kim et al., ICLR 2025) and what it governs.

The Python API mirrors the CLI, one function per command:

    kentropy.measure(model, tokenizer, texts, ...)            # kentropy measure
    kentropy.resuscitate(model, coefficients, ratio, amplify)  # kentropy resuscitate (in place, undoable)
    kentropy.probe(model, tokenizer, entries, plan=...)        # kentropy probe
    kentropy.train(kentropy.TrainConfig(...))                  # kentropy train
    kentropy.evaluate(model, tokenizer, tasks, ...)            # kentropy evaluate
    kentropy.EntropyMonitor(tokenizer, texts, every=N)         # measurement inside a training loop
"""

from kentropy.errors import KentropyError
from kentropy.evaluate import evaluate
from kentropy.knowledge import generate_knowledge, make_plan, probe
from kentropy.outcomes import acquisition, forgetting
from kentropy.measure import Measurement, measure
from kentropy.monitor import EntropyMonitor
from kentropy.resuscitate import resuscitate
from kentropy.train import TrainConfig, train

__all__ = ["KentropyError", "Measurement", "measure", "resuscitate", "probe", "generate_knowledge", "make_plan",
           "acquisition", "forgetting", "train", "TrainConfig", "evaluate", "EntropyMonitor"]
__version__ = "0.1.0"
