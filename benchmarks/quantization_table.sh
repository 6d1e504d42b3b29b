#!/usr/bin/env bash
# The quantization table of docs/quantization.md: PTQ / mixed / QAT / QAT+mixed on every static INT8
# target, next to dynamic INT8 and Core ML's weight-only W8, with the bundled 256-px reference model.
#
#   bash benchmarks/quantization_table.sh [WORK_DIR] [STAGE...]     (WORK_DIR default: out/quant_table)
#   stages: data mixed qat compare latency record (default: all)
#
# The record stage gathers every stage's output but the latency stage's (accuracy, sizes, layer counts,
# GT mIoU) into docs/results/quantization_table.json, which the docs' quantization tables are rendered
# from (python benchmarks/docs_tables.py); the latency stage's timings need a quiet machine and go to
# their own record, docs/results/mixed_latency.json.
#
# Which images do what (no image is in two roles):
#   synthetic train split (600)       QAT trains on it
#   synthetic val split, first 8      calibrate the mixed-precision search
#   synthetic val split, next 16      held out for the search, with
#   10 crops of scikit-image photos   real photos held out for the search (benchmarks/sample_photos.py)
#   synthetic test split, first 8     calibrate every artifact compare exports
#   synthetic test split, next 24     held out: the table's synthetic columns (+ GT mIoU)
#   8 crops of dogs.jpg               held out: the table's real-photo columns (compare --photo-crops)
#
# ranking.json is the search under the gate itself (0.98 / 0.95); mixed.json reuses its ranking under
# 0.99 / 0.98, and compare-gate-recipe shows why.
set -euo pipefail
W=${1:-out/quant_table}
shift || true
STAGES=${*:-data mixed qat compare latency record}
has() { [[ " $STAGES " == *" $1 "* ]]; }
SPLIT=(--calibration-images 8)
mkdir -p "$W"

if has data; then
  edge-sam data synth "$W/synth" --train 600 --val 40 --test 200 --img-size 256 --seed 0 --overwrite
  python "$(dirname "$0")/sample_photos.py" "$W/photos"
fi
if has mixed; then  # the sensitivity ranking once, then the search under the budget the table holds
  edge-sam quantize mixed --checkpoint reference --images "$W/synth/val" "${SPLIT[@]}" --held-out-images 16 \
    --extra-held-out "$W/photos" --target onnx,executorch,tflite,coreml --out "$W/ranking.json" --overwrite
  edge-sam quantize mixed --checkpoint reference --images "$W/synth/val" "${SPLIT[@]}" --held-out-images 16 \
    --extra-held-out "$W/photos" --target onnx,executorch,tflite,coreml --sensitivity "$W/ranking.json" \
    --min-mask-iou 0.99 --min-mask-iou-p5 0.98 --out "$W/mixed.json" --overwrite
  # the same search with the layers it takes out of INT8 at 16-bit activations (integer throughout), on
  # ONNX's simulation (with tflite too, no recipe meets 0.99 / 0.98: docs/quantization.md)
  edge-sam quantize mixed --checkpoint reference --images "$W/synth/val" "${SPLIT[@]}" --held-out-images 16 \
    --extra-held-out "$W/photos" --target onnx --sensitivity "$W/ranking.json" \
    --min-mask-iou 0.99 --min-mask-iou-p5 0.98 --fallback a16 --out "$W/mixed-a16.json" --overwrite
fi
if has qat; then
  edge-sam quantize qat --checkpoint reference --images "$W/synth/train" --out "$W/qat" --recipe static-conv-linear \
    --steps 120 --batch-size 2 --lr 2e-5 --warmup-steps 10 --threads 2
fi
if has compare; then
  common=(--checkpoint reference --images "$W/synth/test" "${SPLIT[@]}" --held-out-images 24 --photo-crops)
  edge-sam quantize compare "${common[@]}" --mixed "$W/mixed.json" --qat "$W/qat" --min-mask-iou 0.98 --min-mask-iou-p5 0.95 \
    --targets onnx,executorch,tflite,coreml --out "$W/compare-static" --overwrite
  # the search under the gate itself (ranking.json) exported: whether a recipe chosen at the gate holds it on
  # images it was not chosen on (the reason mixed.json is searched under a stricter budget)
  edge-sam quantize compare "${common[@]}" --recipe "$W/ranking.json" --min-mask-iou 0.98 --min-mask-iou-p5 0.95 \
    --targets onnx,executorch,tflite,coreml --out "$W/compare-gate-recipe" --overwrite
  edge-sam quantize compare "${common[@]}" --recipe dynamic-linear --targets onnx,executorch,tflite \
    --out "$W/compare-dynamic" --overwrite
  edge-sam quantize compare "${common[@]}" --recipe w8-conv-linear --targets coreml --out "$W/compare-weight-only" --overwrite
  edge-sam quantize compare "${common[@]}" --recipe static-a16-conv-linear --targets onnx,tflite --out "$W/compare-a16" --overwrite
  edge-sam quantize compare "${common[@]}" --mixed "$W/mixed-a16.json" --min-mask-iou 0.98 --min-mask-iou-p5 0.95 \
    --targets onnx,tflite --out "$W/compare-mixed-a16" --overwrite
fi
if has latency; then  # mixed vs full static INT8, interleaved rounds, at the model's size and at 1024, and
  # W8A16 against its a16-fallback recipe on the two targets that run it, all into one record (a quiet machine only;
  # each exits 1 when a target is over --max-ratio; every run is recorded either way)
  LATENCY_RECORD="$(dirname "$0")/../docs/results/mixed_latency.json"
  python "$(dirname "$0")/mixed_precision_latency.py" --recipe-file "$W/mixed.json" --record "$LATENCY_RECORD" || true
  python "$(dirname "$0")/mixed_precision_latency.py" --recipe-file "$W/mixed.json" --rounds 3 --runs 3 \
    --checkpoint tests/data/parity/efficient_sam_vitt_random_seed1234.pt --record "$LATENCY_RECORD" || true
  python "$(dirname "$0")/mixed_precision_latency.py" --recipe static-a16-conv-linear --recipe-file "$W/mixed-a16.json" \
    --targets onnx,tflite --record "$LATENCY_RECORD" || true
fi
if has record; then  # every stage's output (not the latency stage's timings) -> the record the docs quote
  python "$(dirname "$0")/quantization_table_record.py" "$W" --record "$(dirname "$0")/../docs/results/quantization_table.json"
fi
