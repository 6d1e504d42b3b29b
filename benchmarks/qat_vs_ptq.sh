#!/usr/bin/env bash
# QAT vs PTQ at the same recipe, on every INT8 target, with the bundled 256-px reference model.
#
#   bash benchmarks/qat_vs_ptq.sh [WORK_DIR] [STAGE...]     (stages: data qat ptq export validate eval; default all)
#
# Images: QAT trains on the synthetic train split, static INT8 calibrates on the first 8 images of
# the val split, and fidelity is measured on images neither saw: the first 16 images of the test
# split (a box and a centre click per object) and 8 crops of the real photo dogs.jpg (grid clicks
# and boxes). Mask IoU is each artifact's top mask against the ORIGINAL fp32 model's (validate
# accepts a QAT artifact against the model its weights were distilled from). GT mIoU of the QAT
# weights in fp32 vs the original: edge-sam eval on all 200 test images.
set -euo pipefail
W=${1:-qat_bench}
shift || true
STAGES=${*:-data qat ptq export validate eval}
TARGETS="onnx executorch tflite coreml"
RECIPE=static-conv-linear
mkdir -p "$W/art"
has() { [[ " $STAGES " == *" $1 "* ]]; }

if has data; then
  edge-sam data synth "$W/synth" --train 600 --val 40 --test 200 --img-size 256 --seed 0 --overwrite
  python -c "import sys; from edge_sam.targets.core.calibration import photo_crops; from edge_sam.transforms import read_image; \
from edge_sam.apps.common import image_path; photo_crops(read_image(image_path(None)), sys.argv[1], count=8)" "$W/dogs_crops"
fi
if has qat; then
  edge-sam quantize qat --checkpoint reference --images "$W/synth/train" --out "$W/qat" --recipe $RECIPE \
    --steps 150 --batch-size 2 --lr 5e-5 --warmup-steps 15 --threads 2
fi
for t in $TARGETS; do
  if has ptq; then
    edge-sam export --target "$t" --precision int8 --recipe $RECIPE --checkpoint reference \
      --calibration "$W/synth/val" --calibration-images 8 --out "$W/art/$t-ptq" --overwrite
  fi
  if has export; then  # ExecuTorch lowers the learned QAT ranges; the others re-calibrate on the QAT weights
    edge-sam export --target "$t" --precision int8 --recipe $RECIPE --checkpoint "$W/qat" \
      --calibration "$W/synth/val" --calibration-images 8 --out "$W/art/$t-qat" --overwrite
  fi
done
if has validate; then
  edge-sam validate "$W"/art/*-ptq "$W"/art/*-qat --checkpoint reference --dataset "$W/synth/test" --max-images 16 \
    --report "$W/report_synth" --no-memory --no-layers
  edge-sam validate "$W"/art/*-ptq "$W"/art/*-qat --checkpoint reference --images "$W/dogs_crops" \
    --report "$W/report_dogs" --no-memory --no-layers
fi
if has eval; then
  edge-sam eval --checkpoint reference --dataset "$W/synth/test" --modes box,1-click --json "$W/eval_reference.json"
  edge-sam eval --checkpoint "$W/qat" --dataset "$W/synth/test" --modes box,1-click --json "$W/eval_qat.json"
fi
