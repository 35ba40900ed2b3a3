"""Stage 3, training: the configuration (config), the training and validation data sets (data) and the
trainer with its checkpoints and resume (trainer).

May import: core, datasets, simulation, network, evaluation (metrics for validation).
"""
