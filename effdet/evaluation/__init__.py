"""Evaluation as a library: how good a model's outputs are, apart from training.

* :mod:`effdet.evaluation.coco`: COCO bbox mAP of a model on a COCO-format data set
  (``evaluate_coco``), of a ready results list (``coco_stats``), the checkpoint-to-annotation class
  check (``checkpoint_category_ids``) and the summary tables ``effdet val`` and the trainer print.
* :mod:`effdet.evaluation.confusion`: a detection confusion matrix.
* :mod:`effdet.evaluation.plots`: ``pr_curves.png`` and ``confusion_matrix.png`` of an evaluation.

Used by ``effdet val`` and by the trainer's evaluation between epochs. The modules are imported by
name (``from effdet.evaluation.coco import evaluate_coco``); this package file imports none of them,
so one module loads without the others.
"""
