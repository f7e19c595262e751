"""What the model learned, on one static page: ``report.html`` in a run folder, with the
metrics table, training curves, the seen-unseen curve, per-class accuracies, the confusion among
unseen classes, an embedding map of images and class prototypes, and the SLP's attribute
attention maps (pictures in ``report/`` beside the page; nothing is fetched from the network).

::

    from zeromamba.report import report_for_run, report_for_checkpoint
    report_for_run("runs/builtin")                       # runs/builtin/report.html
    report_for_checkpoint("zeromamba_cub.pth", data="CUB", data_root="data/xlsa17")

``zeromamba train`` writes it at the end; ``zeromamba report`` (re)builds it.
"""

from .attention import attribute_attention, choose_examples
from .build import build_report, report_after_training, report_for_checkpoint, report_for_run
from .embedding import embed_2d
from .page import metrics_rows, missing_files

__all__ = [
    "attribute_attention",
    "build_report",
    "choose_examples",
    "embed_2d",
    "metrics_rows",
    "missing_files",
    "report_after_training",
    "report_for_checkpoint",
    "report_for_run",
]
