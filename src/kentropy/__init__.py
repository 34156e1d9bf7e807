"""kentropy: knowledge entropy of language models (Kim et al., ICLR 2025) and what it governs."""

from kentropy.errors import KentropyError
from kentropy.measure import Measurement, measure
from kentropy.monitor import EntropyMonitor

__all__ = ["KentropyError", "Measurement", "measure", "EntropyMonitor"]
__version__ = "0.1.0"
