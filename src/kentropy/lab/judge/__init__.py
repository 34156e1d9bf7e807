"""Statistics and verdicts: the one verdict vocabulary (`verdicts`), the findings' statistics (`stats`),
a pretraining run's entropy trajectory (`trajectory`) and the circuits' findings (`circuits`)."""
