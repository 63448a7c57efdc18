#!/usr/bin/env python
"""Reference-port side of ``effdet benchmark --compare-reference``, driven by ``refport/bench.py`` (not for direct use).

Runs under ``PYTHONPATH=<reference dir>`` where ``import effdet`` is the reference port
(rwightman/efficientdet-pytorch, PyPI ``effdet`` 0.4.1), so it must not import this project.
It is a long-lived process driven by JSON lines on stdin; each command gets one JSON line on
stdout (everything else the process prints goes to stderr). This lets the benchmark interleave
timed runs of ours and the reference's within one measurement.

Commands (``{"cmd": name, ...}``):
  init      threads, device, model_name, num_classes, image_size [H, W], weights (state-dict file),
            max_detection_points, max_det_per_image
  prepare   task: "forward" (input: file with an N x 3 x H x W float tensor, amp),
            "predict" (images: JPEG paths, amp), "train" (batch: file with {images uint8 B x 3 x H x W,
            boxes: list of (N_i, 4) xyxy, labels: list of (N_i,) 0-based}, lr, amp), warmup
  run       runs -> {times: [s], peak_mb, losses?}
  detections out -> writes the last predict call's detections (list of {boxes xyxy, scores, labels 0-based})
  quit
The end-to-end path mirrors ours: PIL decode to RGB, letterbox (scale to fit, top-left, pad with
the ImageNet mean colour; cv2 bilinear resize), normalise, ``DetBenchPredict`` with img_info.
"""

import json
import os
import resource
import statistics  # noqa: F401  (kept for interactive debugging)
import sys
import time
import traceback
import warnings

warnings.filterwarnings("ignore")

_PROTOCOL_OUT = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
sys.stdout = sys.stderr  # anything else printed must not corrupt the protocol stream

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
PAD = tuple(int(round(m * 255)) for m in MEAN)
AMP = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_reference():
    import effdet
    from effdet.version import __version__
    if __version__ != "0.4.1":
        raise RuntimeError(f"expected the reference port effdet 0.4.1, got {__version__} from {effdet.__file__}")
    return effdet.__file__


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rss_mb(key):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def release_free_memory():
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def reset_hwm():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def letterbox(image, size):
    """Same arithmetic as effdet.data.letterbox.letterbox of this project."""
    out_h, out_w = size
    h, w = image.shape[:2]
    scale = min(out_h / h, out_w / w)
    new_h = min(max(1, round(h * scale)), out_h)
    new_w = min(max(1, round(w * scale)), out_w)
    if (new_h, new_w) != (h, w):
        image = cv2.resize(np.ascontiguousarray(image), (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    out = np.empty((out_h, out_w, 3), dtype=np.uint8)
    out[:new_h, :new_w] = image
    out[new_h:, :] = PAD
    out[:new_h, new_w:] = PAD
    return out, scale


def normalize(images):
    mean = torch.tensor(MEAN, dtype=torch.float32, device=images.device).view(3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float32, device=images.device).view(3, 1, 1)
    return images.to(torch.float32).div_(255.0).sub_(mean).div_(std)


def autocast(device, amp):
    import contextlib
    return torch.autocast(device_type=device.type, dtype=AMP[amp]) if amp else contextlib.nullcontext()


class Worker:
    def __init__(self):
        self.task = None
        self.items = 1
        self.losses = []
        self.detections = None

    def init(self, threads, device, model_name, num_classes, image_size, weights, max_detection_points=5000,
             max_det_per_image=100):
        if threads:
            torch.set_num_threads(int(threads))
        self.device = torch.device(device)
        self.model_name = model_name
        self.num_classes = int(num_classes)
        self.image_size = tuple(int(v) for v in image_size)
        self.weights = weights
        self.max_detection_points = int(max_detection_points)
        self.max_det_per_image = int(max_det_per_image)
        return {"effdet_file": check_reference(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                "keeps_freed_memory": os.environ.get("MALLOC_MMAP_MAX_") == "0"}

    def _model(self, drop_path_off=False):
        from effdet import create_model
        model = create_model(self.model_name, bench_task="", num_classes=self.num_classes, pretrained=False,
                             pretrained_backbone=False, image_size=self.image_size,
                             max_det_per_image=self.max_det_per_image)
        model.load_state_dict(torch.load(self.weights, map_location="cpu", weights_only=True), strict=True)
        if drop_path_off:  # deterministic training step, as on our side
            for m in model.modules():
                if hasattr(m, "drop_prob"):
                    m.drop_prob = 0.0
        return model.to(self.device)

    def prepare(self, task, warmup=2, **kw):
        self.task = None
        self.memory_measured = False
        torch.manual_seed(0)
        if task == "forward":
            model = self._model().eval()
            x = torch.load(kw["input"], weights_only=True).to(self.device)
            amp = kw.get("amp")

            def run():
                with torch.inference_mode(), autocast(self.device, amp):
                    return model(x)
            self.items = x.shape[0]
        elif task == "predict":
            from effdet import DetBenchPredict
            # the bench's anchors are built on the CPU: move the whole bench, as the reference's tools do
            bench = DetBenchPredict(self._model()).eval().to(self.device)
            bench.max_detection_points = self.max_detection_points
            bench.max_det_per_image = self.max_det_per_image
            paths = list(kw["images"])
            amp = kw.get("amp")

            def run():
                out = []
                with torch.inference_mode(), autocast(self.device, amp):
                    for path in paths:
                        with Image.open(path) as im:
                            rgb = np.asarray(im.convert("RGB"))
                        boxed, scale = letterbox(rgb, self.image_size)
                        x = torch.from_numpy(boxed[None]).permute(0, 3, 1, 2).to(self.device)
                        x = normalize(x)
                        info = {"img_scale": torch.tensor([1.0 / scale], device=self.device),
                                "img_size": torch.tensor([[rgb.shape[1], rgb.shape[0]]], dtype=torch.float32,
                                                         device=self.device)}
                        out.append(bench(x, img_info=info)[0])
                self.detections = out
                return out
            self.items = len(paths)
        elif task == "train":
            from effdet import DetBenchTrain
            bench = DetBenchTrain(self._model(drop_path_off=True), create_labeler=True).train().to(self.device)
            batch = torch.load(kw["batch"], weights_only=True)
            images = batch["images"].to(self.device)
            n = max(len(b) for b in batch["boxes"])
            bbox = torch.full((len(batch["boxes"]), n, 4), -1.0)
            cls = torch.full((len(batch["boxes"]), n), -1.0)
            for i, (b, lab) in enumerate(zip(batch["boxes"], batch["labels"])):
                bbox[i, :len(b)] = b[:, [1, 0, 3, 2]]  # xyxy -> the reference's yxyx
                cls[i, :len(b)] = lab.float() + 1.0  # the reference's classes are 1-based
            target = {"bbox": bbox.to(self.device), "cls": cls.to(self.device)}
            # the official recipe's step, as the reference port's own train.py runs it and as ours
            # does: no weight decay on biases and norm weights (timm's filter_bias_and_bn), gradient
            # norm clipped at 10, and an EMA of the weights (decay 0.9998, warm-up (1+n)/(10+n))
            params = [p for p in bench.parameters() if p.requires_grad]
            optimizer = torch.optim.SGD([{"params": [p for p in params if p.ndim > 1], "weight_decay": 4e-5},
                                         {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}],
                                        lr=float(kw.get("lr", 1e-4)), momentum=0.9)
            ema = [t.detach().clone() for t in bench.model.state_dict().values()]
            amp = kw.get("amp")
            scaler = torch.amp.GradScaler(self.device.type, enabled=amp == "fp16")
            self.losses = []

            def run():
                optimizer.zero_grad(set_to_none=True)
                with autocast(self.device, amp):
                    loss = bench(normalize(images), target)["loss"]
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, 10.0)
                scaler.step(optimizer)
                scaler.update()
                n = len(self.losses)
                decay = min(0.9998, (1.0 + n) / (10.0 + n))
                with torch.no_grad():
                    for e, t in zip(ema, bench.model.state_dict().values()):
                        if e.is_floating_point():
                            e.lerp_(t, 1.0 - decay)
                        else:
                            e.copy_(t)
                self.losses.append(float(loss.detach()))
            self.items = images.shape[0]
        else:
            raise ValueError(f"unknown task {task!r}")
        self.task = run
        for _ in range(int(warmup)):
            run()
        return {"items": self.items, "losses": list(self.losses)}

    def run(self, runs):
        peak = None
        if not self.memory_measured:  # one untimed call measures memory, as the benchmark does for ours
            self.memory_measured = True
            release_free_memory()
            resettable = reset_hwm()
            if self.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(self.device)
            before = rss_mb("VmRSS")
            self.task()
            sync(self.device)
            if self.device.type == "cuda":
                peak = torch.cuda.max_memory_allocated(self.device) / 2 ** 20
            else:
                peak = max(0.0, rss_mb("VmHWM") - before) if resettable else None
        times, cpu_times = [], []
        for _ in range(int(runs)):
            sync(self.device)
            start, cpu_start = time.perf_counter(), time.process_time()
            self.task()
            sync(self.device)
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
        return {"times": times, "cpu_times": cpu_times, "peak_mb": peak, "items": self.items,
                "losses": list(self.losses)}

    def detections_out(self, out):
        dets = []
        for d in self.detections or []:
            d = d.detach().float().cpu()
            keep = d[:, 4] > 0  # rows past the last detection are zero
            dets.append({"boxes": d[keep, :4].clone(), "scores": d[keep, 4].clone(),
                         "labels": (d[keep, 5] - 1).long()})
        tmp = out + ".tmp"
        torch.save(dets, tmp)
        os.replace(tmp, out)
        return {"out": out, "count": [len(d["scores"]) for d in dets]}


def main():
    worker = Worker()
    handlers = {"init": worker.init, "prepare": worker.prepare, "run": worker.run,
                "detections": worker.detections_out}
    for line in sys.stdin:
        if not line.strip():
            continue
        msg = json.loads(line)
        cmd = msg.pop("cmd")
        if cmd == "quit":
            break
        try:
            reply = {"ok": True, "result": handlers[cmd](**msg)}
        except Exception as e:  # reported to the driver, which raises with the traceback
            reply = {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
        _PROTOCOL_OUT.write(json.dumps(reply) + "\n")
        _PROTOCOL_OUT.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
