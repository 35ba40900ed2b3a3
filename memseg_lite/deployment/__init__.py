"""Using a trained model on new images: prediction with anomaly maps and overlays (predict).

May import: core, datasets, network, evaluation. Never training, experiments, teaching or the CLI.
"""
