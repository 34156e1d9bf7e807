"""The offline laboratory: a generated world and its corpora and tasks, a tokenizer, pretraining, the study and its report."""
