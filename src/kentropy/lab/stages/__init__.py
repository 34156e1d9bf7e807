"""The lab's stages, one per concept, each cached (`lab/cache.py`) and parameterised so that every study
calls the same one: world, tokenizer, corpora, pretrain, measure, continual, resuscitate, circuits."""
