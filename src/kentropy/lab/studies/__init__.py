"""The lab's recipes, which read top-down: the core study (`core`), and the optional studies a config
turns on, each a function of the finished core (`results.Context`) that returns a report `Section`:
knowledge circuits (`circuits`), the decay study (`decay`) and its closing of the loop (`loop`)."""
