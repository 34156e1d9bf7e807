"""Knowledge entropy as a callback inside someone else's training loop.

    monitor = EntropyMonitor(tokenizer, probe_texts, every=100)
    for step, batch in enumerate(loader):
        ...optimizer.step()
        monitor(model, step)          # measures on steps 0, 100, 200, ...
    monitor.history                   # [(step, Measurement), ...]

Training state is left exactly as found: the train/eval mode is restored, no gradients are
made (inference mode), and the Python, NumPy, torch and CUDA RNG states are put back.
"""

from __future__ import annotations

from kentropy.runtime import rng
from kentropy.runtime.arguments import integer, strings, transformers_tokenizer
from kentropy.measurement.capture import check_activation
from kentropy.measurement.workflow import Measurement, check_metrics, measure_ids, tokenize


class EntropyMonitor:
    """Measure a fixed probe set every `every` steps; results accumulate in `history`.

    Every argument is checked here, before training starts (texts: a list of str)."""

    def __init__(self, tokenizer, texts: list[str], every: int, *, seq_len: int = 1024, batch_size: int = 8,
                 metrics=("knowledge",), activation: str = "abs") -> None:
        integer("every", every, low=1)
        integer("batch_size", batch_size, low=1)
        metrics, activation = check_metrics(metrics), check_activation(activation)
        self.ids = tokenize(transformers_tokenizer("tokenizer", tokenizer), strings("texts", texts), seq_len)  # tokenized once
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.every, self.batch_size, self.metrics, self.activation = every, batch_size, metrics, activation
        self.history: list[tuple[int, Measurement]] = []

    def __call__(self, model, step: int) -> Measurement | None:
        if integer("step", step, low=0) % self.every:
            return None
        with rng.kept():  # measure_ids itself runs in eval mode and restores the model's mode
            m = measure_ids(model, self.ids, self.pad_id, metrics=self.metrics, activation=self.activation,
                            batch_size=self.batch_size, name=f"step{step}", progress=False)
        self.history.append((step, m))
        return m

    def trainer_callback(self):
        """The same monitor as a `transformers.TrainerCallback` (measures on `on_step_end`)."""
        from transformers import TrainerCallback

        monitor = self

        class _Callback(TrainerCallback):
            def on_step_end(self, args, state, control, model=None, **kwargs):
                if model is not None:
                    monitor(model, state.global_step)

        return _Callback()
