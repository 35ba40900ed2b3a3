"""Using a trained model on new images: a model loaded once that predicts arrays or files (inferencer),
and the predict command over files, folders and globs with verdicts, masks and overlays (predict); the inference-only network with folded batch norms
and its ONNX export with metadata (export), the fast inference backends (fast) and the Winograd F(4x4, 3x3)
convolution they use for the wide layers (winograd).

May import: core, datasets, network, evaluation. Never training, experiments, teaching or the CLI.
"""
