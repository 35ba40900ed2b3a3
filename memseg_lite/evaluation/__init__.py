"""Stage 4, evaluation: image / pixel AUROC and AU-PRO (metrics), decision thresholds and normalised scores
(thresholds), test-split evaluation and calibration of a checkpoint (evaluate) and its figures (report),
the validation scores checkpoints are selected by: pixel average precision, AU-PRO (selection_metrics).

May import: core, datasets, network. Never training or anything above.
"""
