"""Models: the one family registry, loading, tokenizer-fit checks, and the one neuron map.

    registry.py  every family's FFN (dense, fused, Conv1D, mixture-of-experts), attention and norms,
                 matched by module structure; `find_layout(model)`
    neurons.py   the neuron map: neuron i's input rows, bias entries and output column in every layout,
                 numbered as Cbar is; `parts(layer)`, `split(layer, idx)`
    loading.py   hub ids with `@rev1,rev2` series, local directories, safetensors checks, devices, dtypes
    compat.py    does a tokenizer fit its model (vocabulary, positions, pad), from the config alone
    parameters.py  which parameters are weight matrices (weight decay, shrink-perturb); which hold non-finite values
"""
