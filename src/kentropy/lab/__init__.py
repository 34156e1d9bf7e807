"""The offline laboratory: tiny models pretrained on a generated world, and the studies run on them.

    config.py    every lab config and preset, typed        regime.py   tokens/param, Σ lr·wd, saved steps (pure)
    labdir.py    every path of a lab directory              cache.py    the stage engine (config + code hash)
    text/        world, new domain, rendering, tasks        stages/     one cached stage per concept
    judge/       statistics and the one verdict vocabulary  studies/    the recipes: core, circuits, decay, loop
    report/      report sections, figures, one formatter    results.py  typed results the recipes hand the report
    architectures.py  the lab's model families              pipeline.py `kentropy lab`
"""
