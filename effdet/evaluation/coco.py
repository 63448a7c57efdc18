"""COCO bbox evaluation of an EfficientDet on a COCO-format dataset.

``evaluate_coco`` runs the network over a :class:`effdet.data.CocoDetection` (with
``eval_transform``), detects with :func:`effdet.inference.predictor.detect_batch` (the
predictor's own path; official settings by default, :data:`~effdet.modeling.postprocess.EVAL_SETTINGS`:
score threshold 0.001, 5000 candidates, hard NMS 0.5, 100 detections; optional horizontal-flip
TTA), maps class indices to dataset category ids, and scores them with COCOeval restricted to the
images evaluated. ``coco_stats`` scores a ready results list.

COCOeval is faster-coco-eval's C++ port where it is installed (a dependency: the same figures as
pycocotools, to floating-point rounding, about 10x faster; docs/evaluation.md), else pycocotools';
``evaluator="pycocotools"`` chooses the original, which the tests check the port against.
"""

from __future__ import annotations

import contextlib
import io
import math
import time
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch.utils.data import Dataset, Subset
from tqdm import tqdm

from effdet.data.letterbox import content_size
from effdet.data.loader import collate, worker_init
from effdet.data.results import detections_to_coco, write_results
from effdet.inference.predictor import detect_batch
from effdet.modeling.efficientdet import EfficientDet
from effdet.modeling.postprocess import EVAL_SETTINGS, PostprocessSettings

SUMMARY_NAMES: tuple[str, ...] = (
    "AP @[IoU=0.50:0.95 | area=all | maxDets=100]",
    "AP @[IoU=0.50      | area=all | maxDets=100]",
    "AP @[IoU=0.75      | area=all | maxDets=100]",
    "AP @[IoU=0.50:0.95 | area=small | maxDets=100]",
    "AP @[IoU=0.50:0.95 | area=medium | maxDets=100]",
    "AP @[IoU=0.50:0.95 | area=large | maxDets=100]",
    "AR @[IoU=0.50:0.95 | area=all | maxDets=1]",
    "AR @[IoU=0.50:0.95 | area=all | maxDets=10]",
    "AR @[IoU=0.50:0.95 | area=all | maxDets=100]",
    "AR @[IoU=0.50:0.95 | area=small | maxDets=100]",
    "AR @[IoU=0.50:0.95 | area=medium | maxDets=100]",
    "AR @[IoU=0.50:0.95 | area=large | maxDets=100]",
)
"""Names of COCOeval's 12 summary numbers, in ``stats`` order."""


def evaluate_coco(model: EfficientDet, dataset: Dataset, batch_size: int = 8, device: str | torch.device = "cpu",
                  settings: PostprocessSettings = EVAL_SETTINGS, workers: int = 0, flip: bool = False,
                  progress: bool = True, results_file: str | Path | None = None,
                  category_ids: Sequence[int] | Mapping[int, int] | None = None,
                  verbose: bool = False, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """COCO bbox AP of ``model`` on ``dataset``.

    Args:
        model: the network, already on ``device``; put in eval mode for the run, its previous
            mode restored after (so a training loop can call this between epochs).
        dataset: a :class:`effdet.data.CocoDetection` with ``eval_transform`` (or a ``Subset``
            of one); all images must come out at one size.
        batch_size, workers: DataLoader settings. device: where the network runs.
        settings: post-processing (official COCO eval settings by default).
        flip: horizontal-flip test-time augmentation.
        progress: show a tqdm bar.
        results_file: also write the COCO results JSON here (atomically).
        category_ids: class index -> dataset category id. Default: the dataset's own mapping
            (``dataset.category_ids``); a reference COCO model uses ``range(1, 91)``. Classes whose
            category id is not in the dataset (COCO's 10 unused ids) are dropped.
        verbose: let pycocotools print its summary.
        details: if given, filled with what the pictures of an evaluation need (not JSON):
            ``coco_gt``, ``results``, ``image_ids``, ``category_ids`` (class index -> category id
            dict) and ``coco_eval`` (see :func:`effdet.evaluation.plots.write_eval_plots`).

    Returns:
        dict with ``stats`` (COCOeval's 12 numbers, -1 where undefined), ``map`` (stats[0]),
        ``map50`` (stats[1]), ``per_class`` (list of {category_id, name, ap, ap50}; None where
        the class has no ground truth), ``num_images`` (evaluated), ``num_skipped`` (unreadable
        images), ``num_detections`` and ``time_s``: wall seconds spent waiting for the data loader
        (``data``), in the network and post-processing (``network``) and in COCOeval (``cocoeval``).
        The COCO results themselves go to ``results_file``.
    """
    base = _base_dataset(dataset)
    mapping = _class_mapping(model, base, category_ids)
    device = torch.device(device)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                                         collate_fn=collate, worker_init_fn=worker_init,
                                         pin_memory=device.type == "cuda")
    was_training = model.training
    model.eval()
    results: list[dict[str, Any]] = []
    image_ids: list[int] = []
    skipped = 0
    seconds = dict(data=0.0, network=0.0, cocoeval=0.0)
    try:
        clock = time.perf_counter()
        for images, targets, n_skipped in tqdm(loader, desc="eval", disable=not progress, unit="batch"):
            loaded = time.perf_counter()
            seconds["data"] += loaded - clock
            clock = loaded
            skipped += n_skipped
            if not targets:
                continue
            size = (images.shape[-2], images.shape[-1])
            scales = torch.tensor([t["scale"] for t in targets], dtype=torch.float32, device=device)
            valid = torch.tensor([content_size(t["orig_size"], t["scale"], size) for t in targets],
                                 dtype=torch.float32, device=device)
            batch = images.to(device, non_blocking=True)
            detections = detect_batch(model, batch, valid, scales, settings, flip)
            ids = [int(t["image_id"]) for t in targets]
            results.extend(detections_to_coco(detections, ids, mapping))
            image_ids.extend(ids)
            clock = time.perf_counter()
            seconds["network"] += clock - loaded
    finally:
        model.train(was_training)
    if skipped:
        warnings.warn(f"evaluation skipped {skipped} unreadable image(s); they are left out of the COCO metrics",
                      stacklevel=2)
    if results_file is not None:
        write_results(results, results_file)
    coco_gt = base.coco_api()
    if details is not None:
        details.update(coco_gt=coco_gt, results=results, image_ids=image_ids, category_ids=mapping)
    clock = time.perf_counter()
    metrics = coco_stats(coco_gt, results, image_ids, verbose=verbose, details=details)
    seconds["cocoeval"] = time.perf_counter() - clock
    metrics.update(num_images=len(image_ids), num_skipped=skipped, num_detections=len(results),
                   time_s={k: round(v, 3) for k, v in seconds.items()})
    return metrics


COCO_EVALUATORS = ("auto", "faster-coco-eval", "pycocotools")
"""``coco_stats(evaluator=...)``: ``auto`` is faster-coco-eval where it is installed, else pycocotools."""


def coco_stats(coco_gt: Any, results: Sequence[Mapping[str, Any]], image_ids: Sequence[int] | None = None,
               verbose: bool = False, details: dict[str, Any] | None = None, evaluator: str = "auto"
               ) -> dict[str, Any]:
    """Run COCOeval (bbox) for a COCO results list.

    Args:
        coco_gt: a ``pycocotools.coco.COCO`` ground-truth index.
        results: COCO results entries (``image_id``, ``category_id``, ``bbox`` xywh, ``score``).
        image_ids: evaluate only these images (default: every image in ``coco_gt``).
        verbose: print COCOeval's summary; otherwise its output is captured.
        details: if given, ``details["coco_eval"]`` is set to the accumulated ``COCOeval``.
        evaluator: one of :data:`COCO_EVALUATORS`.

    Returns:
        dict with ``stats`` (12 floats), ``map``, ``map50`` and ``per_class`` (list of
        ``{category_id, name, ap, ap50}``; ap/ap50 are None for classes without ground truth in
        the evaluated images). With no detections every defined number is 0.
    """
    gt_ids = set(coco_gt.getImgIds())
    unknown = sorted({int(r["image_id"]) for r in results} - gt_ids)
    if unknown:
        raise ValueError(f"{len(unknown)} image id(s) in the results are not in the annotation file "
                         f"(e.g. {unknown[:5]}); evaluate against the annotation file the detections were made for")
    ids = sorted(gt_ids if image_ids is None else set(int(i) for i in image_ids))
    out = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with out:
        cocoeval = _cocoeval(coco_gt, results, evaluator, verbose)
        cocoeval.params.imgIds = ids
        cocoeval.evaluate()
        cocoeval.accumulate()
        cocoeval.summarize()
    stats = [float(v) for v in cocoeval.stats]
    if details is not None:
        details["coco_eval"] = cocoeval
    return dict(stats=stats, map=stats[0], map50=stats[1], per_class=_per_class(coco_gt, cocoeval))


def _faster_coco_eval() -> Any:
    """The faster_coco_eval module, or None where it is not installed."""
    try:
        import faster_coco_eval  # noqa: PLC0415
    except ImportError:
        return None
    return faster_coco_eval


def _cocoeval(coco_gt: Any, results: Sequence[Mapping[str, Any]], evaluator: str, verbose: bool) -> Any:
    """A bbox COCOeval of ``results`` against ``coco_gt`` (a pycocotools index) from ``evaluator``."""
    if evaluator not in COCO_EVALUATORS:
        raise ValueError(f"evaluator {evaluator!r}: use one of {', '.join(COCO_EVALUATORS)}")
    fast = _faster_coco_eval() if evaluator != "pycocotools" else None
    if evaluator == "faster-coco-eval" and fast is None:
        raise ImportError("faster-coco-eval is not installed: pip install faster-coco-eval, or use evaluator='auto'")
    if fast is None:
        from pycocotools.coco import COCO  # noqa: PLC0415
        from pycocotools.cocoeval import COCOeval  # noqa: PLC0415

        return COCOeval(coco_gt, _load_results(coco_gt, results, COCO), "bbox")
    gt = fast.COCO()  # an index of its own, over copies of the annotations (COCOeval marks them)
    gt.dataset = {**coco_gt.dataset, "annotations": [dict(a) for a in coco_gt.dataset.get("annotations", [])]}
    gt.createIndex()
    return fast.COCOeval_faster(gt, _load_results(gt, results, fast.COCO), "bbox",
                                print_function=print if verbose else lambda *a, **k: None)


def _load_results(coco_gt: Any, results: Sequence[Mapping[str, Any]], index: type) -> Any:
    """A COCO index (class ``index``) of the detections (``loadRes`` on copies; an empty index for
    no detections)."""
    if results:
        return coco_gt.loadRes([dict(r) for r in results])  # loadRes adds keys to the dicts
    empty = index()
    empty.dataset = dict(images=list(coco_gt.dataset.get("images", [])),
                         categories=list(coco_gt.dataset.get("categories", [])), annotations=[])
    empty.createIndex()
    return empty


def _per_class(coco_gt: Any, evaluator: Any) -> list[dict[str, Any]]:
    """AP (IoU .50:.95) and AP50 per category, area all, 100 detections."""
    precision = evaluator.eval["precision"]  # T x R x K x A x M; -1 where undefined
    rows = []
    for k, cid in enumerate(evaluator.params.catIds):
        p_all = precision[:, :, k, 0, -1]
        p_50 = precision[0, :, k, 0, -1]
        rows.append(dict(category_id=int(cid), name=str(coco_gt.cats[cid]["name"]),
                         ap=float(p_all[p_all > -1].mean()) if (p_all > -1).any() else None,
                         ap50=float(p_50[p_50 > -1].mean()) if (p_50 > -1).any() else None))
    return rows


def format_ap(value: float | None) -> str:
    """An AP or AR as a fraction with 3 decimals; ``undefined`` where COCOeval has none (its -1:
    no ground truth in the evaluated images or area range, or no images), or for None / NaN."""
    if value is None or math.isnan(value) or value < 0:
        return "undefined"
    return f"{value:.3f}"


def format_summary(stats: Sequence[float]) -> str:
    """COCOeval's 12 numbers, one per line, with their names (``undefined`` for its -1)."""
    return "\n".join(f"{name:<48} = {format_ap(value):>6}" for name, value in zip(SUMMARY_NAMES, stats))


def format_per_class(per_class: Sequence[Mapping[str, Any]]) -> str:
    """A fixed-width table: category id, name, AP and AP50 as fractions in [0, 1], as COCOeval's
    summary and the training log print them ('-' without ground truth)."""
    width = max([len("class")] + [len(str(row["name"])) for row in per_class])
    lines = [f"{'id':>5}  {'class':<{width}}  {'AP':>6}  {'AP50':>6}"]
    for row in per_class:
        ap, ap50 = (f"{v:6.3f}" if v is not None and not math.isnan(v) and v >= 0 else f"{'-':>6}"
                    for v in (row["ap"], row["ap50"]))
        lines.append(f"{row['category_id']:>5}  {row['name']:<{width}}  {ap}  {ap50}")
    return "\n".join(lines)


def _base_dataset(dataset: Dataset) -> Any:
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    if not hasattr(dataset, "coco_api") or not hasattr(dataset, "category_ids"):
        raise TypeError(f"evaluate_coco needs an effdet.data.CocoDetection (or a Subset of one), "
                        f"got {type(dataset).__name__}")
    return dataset


def _class_mapping(model: EfficientDet, dataset: Any, category_ids: Sequence[int] | Mapping[int, int] | None
                   ) -> dict[int, int]:
    num_classes = model.config.num_classes if model.config is not None else None
    if category_ids is None:
        if num_classes is not None and num_classes != len(dataset.category_ids):
            raise ValueError(
                f"the model predicts {num_classes} classes but {dataset.annotation_file} has "
                f"{len(dataset.category_ids)} categories; pass category_ids (class index -> category id), "
                "e.g. range(1, 91) for a 90-class COCO model")
        return dict(enumerate(dataset.category_ids))
    mapping = dict(category_ids) if isinstance(category_ids, Mapping) else dict(enumerate(category_ids))
    if num_classes is not None and any(not 0 <= k < num_classes for k in mapping):
        raise ValueError(f"category_ids maps class indices outside the model's 0..{num_classes - 1}")
    known = set(dataset.category_ids)
    kept = {k: int(v) for k, v in mapping.items() if int(v) in known}
    if not kept:
        raise ValueError(f"none of the model's category ids occur in {dataset.annotation_file}; "
                         "the checkpoint was trained for other categories")
    return kept


def checkpoint_category_ids(class_names: Sequence[str] | None, category_ids: Sequence[int] | None,
                            num_classes: int, dataset: Any, source: str = "checkpoint") -> list[int]:
    """Class index -> dataset category id for a loaded checkpoint, checked against ``dataset``.

    ``class_names`` / ``category_ids``: what the checkpoint recorded (``load_model``'s info).
    With category ids: every id the checkpoint shares with the annotation file must carry the
    same name there (case-insensitive), and they must share at least one id. Ids only the model
    has (e.g. COCO's unused slots, or a file with a subset of the classes) are dropped from the
    evaluation, with a warning unless they are placeholder names ``unused-*``; categories only
    the file has score AP 0, with a warning. Without recorded ids, the model must have as many
    classes as the file has categories, taken in sorted id order (``CocoDetection``'s numbering).

    Raises:
        ValueError: the checkpoint's classes do not match the annotation file's categories.
    """
    names = {cid: name for cid, name in zip(dataset.category_ids, dataset.class_names)}
    where = f"{source} vs {dataset.annotation_file}"
    if category_ids is None:
        if num_classes != len(dataset.category_ids):
            raise ValueError(f"{where}: the model has {num_classes} classes and records no category ids, the "
                             f"annotation file has {len(dataset.category_ids)} categories; evaluate on the dataset "
                             "the model was trained for")
        if class_names is not None and [n.lower() for n in class_names] != [n.lower() for n in dataset.class_names]:
            raise ValueError(f"{where}: class names differ: checkpoint {list(class_names)[:5]}..., annotation file "
                             f"{dataset.class_names[:5]}...")
        return list(dataset.category_ids)
    if len(category_ids) != num_classes:
        raise ValueError(f"{where}: the checkpoint records {len(category_ids)} category ids for {num_classes} classes")
    model_names = list(class_names) if class_names is not None else [None] * num_classes
    conflicts = [f"category {cid} is {name!r} in the checkpoint but {names[cid]!r} in the file"
                 for cid, name in zip(category_ids, model_names)
                 if cid in names and name is not None and name.lower() != names[cid].lower()]
    if conflicts or not set(category_ids) & set(names):
        raise ValueError(f"{where}: the checkpoint's classes do not match the annotation file's categories: "
                         f"{'; '.join(conflicts[:3]) or 'no category id in common'}"
                         f"{f' (and {len(conflicts) - 3} more)' if len(conflicts) > 3 else ''}. "
                         "Evaluate on the dataset the model was trained for.")
    only_model = [f"{cid} ({name})" for cid, name in zip(category_ids, model_names)
                  if cid not in names and not (name or "").startswith("unused")]
    only_file = [f"{cid} ({name})" for cid, name in names.items() if cid not in set(category_ids)]
    if only_model:
        warnings.warn(f"{where}: {len(only_model)} of the model's categories are not in the annotation file "
                      f"(e.g. {', '.join(only_model[:3])}); their detections are left out", stacklevel=2)
    if only_file:
        warnings.warn(f"{where}: the model does not predict {len(only_file)} of the file's categories "
                      f"(e.g. {', '.join(only_file[:3])}); they score AP 0", stacklevel=2)
    return list(category_ids)
