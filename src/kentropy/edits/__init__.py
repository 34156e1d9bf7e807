"""Edits to a model's weights, each through the neuron map of `kentropy.models`.

    resuscitate.py     Algorithm 1 of Kim et al. (ICLR 2025): amplify the inputs of rarely used memories
    redo.py            ReDo (Sokar et al. 2023): re-initialise dormant neurons
    shrink_perturb.py  shrink and perturb (Ash & Adams 2020)
    session.py         the path every editing command shares: load, measure before and after, save
    intervene.py       `kentropy resuscitate` and `kentropy intervene`: one command per method, one implementation
"""
