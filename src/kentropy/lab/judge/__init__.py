"""Statistics and verdicts: the one verdict vocabulary (`verdicts`), the findings' statistics (`stats`),
a decay study's preregistered plan (`plan`) and seed-level inference (`seeds`) and the circuits' findings (`circuits`)."""
