"""Studies that train and evaluate many runs: the MVTec AD reproduction table (reproduce) beside the
published numbers (reference_numbers); the ablation study over named variants (variants) of the network
and the simulation, per seed, with one results table (ablate); one run of a study, trained or resumed, with its
best and its last checkpoint evaluated side by side (runs).

May import: every stage (core .. training). Never deployment, teaching or the CLI.
"""
