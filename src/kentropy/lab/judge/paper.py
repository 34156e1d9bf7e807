"""The lab's yardstick: what Kim et al. (ICLR 2025) report, where each number comes from, and what it implies in
the lab's units. Nothing here is measured by the lab.

- Finding 1 (Fig. 7): OLMo-1B's knowledge entropy lies between 143.3 and 143.8 nats over its whole pretraining,
  the y-axis range of the figure, read to 0.1 (the maximum is 16 ln 8192 = 144.17): a whole-run fall of at most
  ~0.5 nats, ≤ 0.031 KL nats per layer. The share of it in the second half of training (the lab's primary
  contrast) is not given. The fall is largest in the last layer (Fig. 8), whose size is not given as a number:
  at most the whole 0.5 nats. The last layer is 1/16 of OLMo-1B's layers but 1/2 of a 2-layer lab model's.
- Findings 2 (Table 2: OLMo-1B continued on PubMed at lr 4e-4, batch 128, from 118k, 369k, 554k and 738k of its
  739,328 steps): A 25.2, 24.8, 21.4, 18.8 and F 10.5, 12.9, 17.0, 19.5 (D after 54.0 → 52.0). With H falling by at
  most the whole-run 0.5 nats between the first and the last of them, A falls by at least 6.4 / 0.03125 = 204.8
  points per nat of KL per layer and F rises by at least 9.0 / 0.03125 = 288. At lr 1e-4 (row d) A barely moves.
- For scale from a real model: gemma-3-270m (base) sits at KL 0.27 nats per layer on English prose, its random
  init at 0.05.
"""

from __future__ import annotations

import math

from kentropy.errors import KentropyError
from kentropy.lab.regime import OLMO_1B

SOURCE = "Kim et al. (ICLR 2025)"
FIG_7 = {"lo": 143.3, "hi": 143.8, "layers": 16, "ffn_dim": 8192}  # OLMo-1B's H over its run: the y-axis range, nats
TABLE_2 = {"steps": (118_000, 369_000, 554_000, 738_000), "A": (25.2, 24.8, 21.4, 18.8), "F": (10.5, 12.9, 17.0, 19.5),
           "D_after": (54.0, 52.0), "lr": 4e-4, "batch": 128, "data": "PubMed"}
GEMMA_270M = {"model": "gemma-3-270m (base)", "kl_per_layer": 0.27, "init_kl_per_layer": 0.05, "text": "English prose"}


def _fall() -> dict:
    fall = round(FIG_7["hi"] - FIG_7["lo"], 1)
    per_layer = fall / FIG_7["layers"]
    return {"model": "OLMo-1B", "whole_run_fall_nats": fall, "delta_kl_per_layer": per_layer,
            "fraction_of_max": fall / (FIG_7["layers"] * math.log(FIG_7["ffn_dim"])),
            "second_half_share": None, "last_layer_fall_nats": {"at_most": fall, "value": None},
            "source": f"{SOURCE}, Fig. 7: OLMo-1B's knowledge entropy lies between {FIG_7['lo']} and {FIG_7['hi']} nats over its "
                      f"whole pretraining (the y-axis range), a fall of at most {fall} nats, ≤ {per_layer:.3f} KL nats per layer "
                      f"(L = {FIG_7['layers']}, m = {FIG_7['ffn_dim']}, maximum L ln m = "
                      f"{FIG_7['layers'] * math.log(FIG_7['ffn_dim']):.2f}); the share of it in the second half is not given; "
                      f"Fig. 8: largest in the last layer, its size not given (at most the whole {fall} nats)"}


PAPER_REFERENCE = _fall()


def _implied() -> dict:
    """Table 2's A and F between its first and last checkpoints, per nat of KL per layer and per fraction of training."""
    kl = PAPER_REFERENCE["delta_kl_per_layer"]
    span = (TABLE_2["steps"][-1] - TABLE_2["steps"][0]) / OLMO_1B["steps"]
    dA, dF = TABLE_2["A"][-1] - TABLE_2["A"][0], TABLE_2["F"][-1] - TABLE_2["F"][0]
    return {"A_per_kl": dA / kl, "F_per_kl": dF / kl, "A_per_fraction": dA / span, "F_per_fraction": dF / span,
            "fraction_span": span,
            "assumptions": [
                f"A and F change linearly with KL per layer, and H falls between Table 2's first and last checkpoints "
                f"({TABLE_2['steps'][0]:,} and {TABLE_2['steps'][-1]:,} steps) by at most Fig. 7's whole-run {PAPER_REFERENCE['whole_run_fall_nats']} "
                f"nats, so the paper's effects per nat are lower bounds: A {dA:+.1f} and F {dF:+.1f} points over ≤ {kl:.5f} "
                f"KL nats per layer",
                f"per step, A and F change linearly with the fraction of pretraining, as between those checkpoints "
                f"({span:.3f} of OLMo-1B's {OLMO_1B['steps']:,} steps)",
                "the effect per nat of KL per layer and per fraction of training carries over to the lab's models, worlds and "
                f"continual protocol (the paper's lr {TABLE_2['lr']:g}, batch {TABLE_2['batch']}; at lr 1e-4 A barely moved)",
                "resuscitation moves A and F as a rise of H of the same size along pretraining would (finding 2's slope times "
                "the rise the edit measured)"]}


IMPLIED = _implied()
UNITS = {"1": "KL nats per layer", "2a": "% per step", "2b": "% per step", "2c": "% per nat of H (sum over layers)",
         "2d": "% per nat of H (sum over layers)", "2e": "log-probability per nat of H", "3a": "% (A, resuscitated − plain)",
         "3b": "% (F, resuscitated − plain)"}


def implied_effect(finding: str, layers: int, steps: int | None = None, kl_rise: float | None = None) -> float | None:
    """The effect the paper implies at least, signed, in the units of `finding` (`UNITS`) for a lab model of `layers`
    layers: 2a/2b per optimizer step of a `steps`-step run; 2c/2d per nat of H summed over layers (dA/dH =
    −dA/dKL / L, KL per layer = ln m − H / L); 3a/3b for an edit that raised H by `kl_rise` nats per layer
    ((H after − H before) / L: KL falls by as much), ΔA = −dA/dKL · kl_rise. None where the paper implies no size
    (1, 2e, or 3 without a rise)."""
    if layers < 1:
        raise KentropyError(f"layers must be positive, got {layers}")
    if finding in ("2a", "2b"):
        if not steps:
            raise KentropyError(f"finding {finding}: the run's steps are needed for an effect per step")
        return IMPLIED["A_per_fraction" if finding == "2a" else "F_per_fraction"] / steps
    if finding in ("2c", "2d"):
        return -IMPLIED["A_per_kl" if finding == "2c" else "F_per_kl"] / layers
    if finding in ("3a", "3b"):
        if kl_rise is None or kl_rise <= 0:
            return None
        return -IMPLIED["A_per_kl" if finding == "3a" else "F_per_kl"] * kl_rise
    return None


def compare_to_paper(delta_kl_per_layer: float, layers: int, ffn_dim: int) -> dict:
    """A change ΔKL (nats per layer, positive = H fell) beside OLMo-1B's whole-run range (0, 0.031]: the same Δ in % of
    L ln m (= 100 Δ / ln m) and `relation`: "a rise or no change" (≤ 0), "within OLMo-1B's whole-run range", or
    "beyond OLMo-1B's whole-run bound". The paper's second-half share is not given, so no ratio is formed."""
    if layers < 1 or ffn_dim < 2:
        raise KentropyError(f"layers must be ≥ 1 and ffn_dim ≥ 2, got {layers} and {ffn_dim}")
    percent = 100 * delta_kl_per_layer / math.log(ffn_dim)
    bound = PAPER_REFERENCE["delta_kl_per_layer"]
    relation = ("a rise or no change" if delta_kl_per_layer <= 0 else "within OLMo-1B's whole-run range"
                if delta_kl_per_layer <= bound else "beyond OLMo-1B's whole-run bound")
    return {"delta_kl_per_layer": delta_kl_per_layer, "percent_of_max": percent, "relation": relation,
            "text": f"ΔKL {delta_kl_per_layer:+.4f} nats per layer ({percent:+.3f}% of L ln m): {relation} (OLMo-1B: a whole-run "
                    f"fall of at most {bound:.3f} nats per layer, {100 * PAPER_REFERENCE['fraction_of_max']:.2f}% of L ln m, read "
                    f"from the Fig. 7 axis; its second-half share is not given)"}


def last_layer_text(layers: int) -> str:
    """The last-layer comparison in words for a lab model of `layers` layers."""
    fall = PAPER_REFERENCE["whole_run_fall_nats"]
    return (f"OLMo-1B's fall is largest in its last layer (Fig. 8), whose size is not given: at most the whole {fall} nats. "
            f"Its last layer is 1/{FIG_7['layers']} of its layers; here it is 1/{layers}")


def scale_text(kl_per_layer: float | None = None) -> str:
    """A real model's KL to uniform per layer, for scale (beside the lab's `kl_per_layer` where given)."""
    g = GEMMA_270M
    here = "" if kl_per_layer is None else f"here {kl_per_layer:.3f} KL nats per layer; "
    return f"{here}for scale, {g['model']} sits at {g['kl_per_layer']} on {g['text']}, its random init at {g['init_kl_per_layer']}"
