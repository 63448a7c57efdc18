"""Looking at a data set, apart from training: how well the anchors fit its boxes, and its labels.

* :mod:`effdet.analysis.anchor_fit`: anchor coverage of a data set's boxes, better anchor settings
  (``effdet data anchors``, and the trainer's ``auto_anchors``).
* :mod:`effdet.analysis.labels`: ``labels.png``, class counts and box sizes against the anchors.

The modules are imported by name (``from effdet.analysis.anchor_fit import suggest_anchors``); this
package file imports neither, so ``effdet data`` loads only what it runs.
"""
