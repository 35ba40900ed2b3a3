"""Stage 4, evaluation: image / pixel AUROC and AU-PRO (metrics), test-split evaluation of a checkpoint
(evaluate) and its figures (report).

May import: core, datasets, network. Never training or anything above.
"""
