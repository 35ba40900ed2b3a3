"""Stage 3, training: the configuration (config), its command-line options (options), the presets of
published code (presets), what a user typed resolved into a run's configuration (resolve), the training
and validation data sets (data) and the trainer with its checkpoints and resume (trainer); data-parallel
training over several processes or machines with torchrun (distributed).

May import: core, datasets, simulation, network, evaluation (metrics for validation).
"""
