"""Rules of the lab's analysis that were added after a run's results were seen, each in words (when, after which
run, what). They are printed with every plan, stored in results.json (`deviations`, with a preset's own) and
listed in the report: a reader can tell the rules fixed before any run from those chosen after one."""

from __future__ import annotations

RULES = (
    "2026-11-30, after the loop of make decay was seen: D before continual learning compared with the D of a guess "
    "that knows only the answer priors (against_floor), and F read as a shift of preferences rather than a loss of "
    "knowledge where D lies at or below it.",
    "2026-12-05, after make decay and make demo at 0511599 were seen (D before continual learning at the prior-only "
    "floor; a loop whose slopes could not reach the paper's effect; Algorithm 1 lowering H): the gates (knowledge, "
    "power from a pilot, manipulation, and the regime of finding 1), computed before any verdict; one verdict ladder "
    "for the whole lab (direction by a two-sided test with Holm across the family, `rose` tried before `no decay`, a "
    "minimum-effect test against the SESOI; a slope or an effect `did not hold` only where its interval excludes the "
    "paper-implied effect or it is significant the other way; circuits over pretraining seeds); interventions and "
    "resuscitation judged also on P and D after continual learning, paired by pretraining seed; Algorithm 1 over a "
    "grid of p, each p counted only in the seeds where H rose; the paper's effect stated as a range. These rules were "
    "chosen by what a design can tell, never by which way it told.",
    "2026-12-06, after a knowledge pilot's testable table was seen (finding 3a read testable beside a verdict of not "
    "measurable): finding 3's power gate over the grid of p is that of the p that raised H in some seed (a p that "
    "raised it nowhere has no paper-implied effect and no longer passes the gate for the others), and the testable "
    "table never says yes beside a verdict that was not tested.",
    "2026-12-06, after make demo at bb112c0 was timed (11.0 min from a fresh clone, over its 10): the quick preset's "
    "pretraining seeds 3 -> 2. Chosen by the run's time, not by its results; the demo's findings read not measurable "
    "either way.",
)
