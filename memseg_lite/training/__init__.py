"""Stage 3, training: the configuration (config), the training and validation data sets (data) and the
trainer with its checkpoints and resume (trainer); data-parallel training over several processes or
machines with torchrun (distributed).

May import: core, datasets, simulation, network, evaluation (metrics for validation).
"""
