"""Which parameters are which: the weight matrices (what weight decay and shrink-perturb touch), and
the parameters that hold non-finite values (what a non-finite forward pass is blamed on).

    weight_matrices(model)                  [(name, parameter)] of every weight matrix, each tensor once
    nonfinite_parameters(model)             names of the parameters holding NaN or infinite values
    raise nonfinite_forward(model, name, "the logits of a forward pass")   the error for NaN or infinite outputs

A weight matrix is a parameter of two or more dimensions (mixture-of-experts weights [E, ., .]
included) that is not an embedding: token and learned position embeddings (`nn.Embedding`), nor an
output head tied to them. An untied LM head is a weight matrix (as OLMo decays its `ff_out`). Norms
and biases are one-dimensional, so never weight matrices.
"""

from __future__ import annotations

import torch

from kentropy.errors import KentropyError


def weight_matrices(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    """(name, parameter) of every weight matrix of `model`, in parameter order; a tied tensor once, under its first name."""
    skip = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if emb is not None:  # an input embedding of another type (a Linear, a custom module): still an embedding
        skip |= {id(p) for p in emb.parameters()}
    return [(name, p) for name, p in model.named_parameters() if p.dim() >= 2 and id(p) not in skip]


def nonfinite_parameters(model: torch.nn.Module) -> list[str]:
    """Names of the parameters of `model` that hold a NaN or an infinity, in parameter order (buffers are left
    out: a causal mask may hold -inf by design). A sharded parameter is checked in this process's shard."""
    with torch.no_grad():
        return [name for name, p in model.named_parameters() if p.is_floating_point()
                and not bool(torch.isfinite(p.to_local() if hasattr(p, "to_local") else p).all())]


def nonfinite_forward(model: torch.nn.Module, name: str, what: str, show: int = 3) -> KentropyError:
    """The error for a forward pass of `model` (called `name`: a checkpoint) whose `what` ("the logits of a forward
    pass", "the loss of step 0") came out NaN or infinite: it says whether the weights hold non-finite values (naming some) or are all finite."""
    bad = nonfinite_parameters(model)
    if bad:
        more = f", ... ({len(bad) - show} more)" if len(bad) > show else ""
        why = f"its weights hold non-finite values (in {len(bad)} tensor{'s' * (len(bad) != 1)}: {', '.join(bad[:show])}{more})"
    else:
        dtype = next((p.dtype for p in model.parameters()), None)
        why = f"its weights are all finite (the forward overflows{f' in {dtype}' if dtype is not None else ''})"
    return KentropyError(f"{name}: {what} came out NaN or infinite; {why}")
