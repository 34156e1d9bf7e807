"""Edits to a model's weights; those of single neurons go through the neuron map of `kentropy.models`.

    resuscitate.py     Algorithm 1 of Kim et al. (ICLR 2025): amplify the inputs of rarely used memories;
                       `kentropy resuscitate`
    redo.py            ReDo (Sokar et al. 2023): re-initialise dormant neurons
    shrink_perturb.py  shrink and perturb (Ash & Adams 2020), on every weight matrix
    session.py         the options and the path every editing command shares: load, measure before and
                       after, save
    intervene.py       `kentropy intervene`: one of the three by --method (resuscitate: the same path as
                       `kentropy resuscitate`)
"""
