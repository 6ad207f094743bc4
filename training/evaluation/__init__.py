"""`purifier eval CONFIG`: the robustness table (targets x attacks x defenses).

Cells are the target classifier's top-1 error (%) on the first N test images.
Non-adaptive attacks are crafted on the undefended classifier (or, for SSP, on the
feature extractor) and then passed through each defense. Adaptive rows attack the
defended pipeline itself: BPDA (identity backward through the defense) for every
defense, and white-box gradients through each differentiable purifier.

Unlabelled data (photos): the reference is the target's own top-1 on the clean image,
so a cell is the fooling rate (%) and the clean row is 100 - clean agreement. With a
`source` model, attacks are crafted once on it and measured on every target (transfer).
"""

from training.evaluation.engine import NOT_APPLICABLE, NOT_RUN, Evaluation, predict
from training.evaluation.report import format_cell, markdown_table, wilson_interval
from training.evaluation.run import evaluate_from_config
from training.evaluation.targets import classifier_specs, load_purifier, load_target, target_parts

__all__ = [
    "NOT_APPLICABLE",
    "NOT_RUN",
    "Evaluation",
    "classifier_specs",
    "evaluate_from_config",
    "format_cell",
    "load_purifier",
    "load_target",
    "markdown_table",
    "predict",
    "target_parts",
    "wilson_interval",
]
