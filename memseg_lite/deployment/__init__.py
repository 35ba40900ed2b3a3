"""Using a trained model on new images: a model loaded once that predicts arrays or files (inferencer),
and the predict command over files, folders and globs with verdicts, masks and overlays (predict); the
inference-only network with folded batch norms and its ONNX export with preprocessing, decision and metadata
(export), the registry of inference backends (fast) and OpenVINO: its backends, export and INT8 quantization
(openvino_runtime).

May import: core, datasets, network, evaluation. Never training, experiments, teaching or the CLI.
"""
