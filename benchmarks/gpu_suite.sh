#!/usr/bin/env bash
# The whole GPU side of the project in one call (at most 8 minutes on one
# H100 / H200), writing a markdown report into REPORT_DIR/gpu_suite.md:
#   1. the CUDA-only tests (pytest -m cuda);
#   2. step throughput, two-view DINO vs GLARE with the library defaults,
#      ViT-S/16 and ViT-B/16, 224 px, batch 256, bf16: images/s, achieved
#      TFLOP/s and share of the bf16 dense peak (989 TFLOP/s), peak memory;
#   3. end-to-end images/s with data loading from a folder of real crops;
#   4. 20 iterations of tools/train.py --amp pre-training, then the same with
#      tools/dist_train.sh on one GPU.
# --smoke runs every step but dist_train.sh (mmengine's launcher needs CUDA) on
# the CPU with tiny sizes (about a minute on an idle machine; `make test` runs
# it through tests/test_gpu_suite.py). Exits 1 if a section failed.
#
# Usage: bash benchmarks/gpu_suite.sh REPORT_DIR [--smoke]
set -euo pipefail

if [ "$#" -lt 1 ] || [ "$#" -gt 2 ] || { [ "$#" -eq 2 ] && [ "$2" != "--smoke" ]; }; then
    echo "usage: $0 REPORT_DIR [--smoke]" >&2
    exit 2
fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(mkdir -p "$1" && cd "$1" && pwd)
SMOKE=${2:-}
PYTHON=${PYTHON:-python}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONWARNINGS=ignore
REPORT="$OUT/gpu_suite.md"
cd "$ROOT"

if [ -n "$SMOKE" ]; then
    DEVICE=cpu
    MODELS=(vit_tiny_patch16_224)
    BENCH=(--device cpu --img-size 32 --batch 2 --steps 1 --warmup 1
           --hidden-dim 64 --output-dim 256 --workers 0)
    CROPS=8
    KERNELS=(--device cpu --rounds 1 --calls 1 --dtypes bf16)
    # The aerial config shrunk to a 2-block ViT-Ti at 32 px, 2 iterations.
    CONFIG=mmseg_configs/pretrain/glare_vit-s14-dinov2_1xb16-300iter_aerial-126.py
    TRAIN=(model.backbone.arch=vit_tiny_patch16_224 model.backbone.img_size=32
           model.backbone.vit_cfg.depth=2 model.backbone.adapter_bottleneck=8
           model.head.output_dim=64 model.head.hidden_dim=32
           model.head.bottleneck_dim=16
           train_dataloader.dataset.transform.input_size=32
           train_dataloader.batch_size=2 train_cfg.max_iters=2
           train_dataloader.num_workers=0 train_dataloader.persistent_workers=False
           default_hooks.logger.interval=1 env_cfg.dist_cfg.backend=gloo)
    AMP=$("$PYTHON" -c "from lightly_glare.precision import native_bf16
print('--amp' if native_bf16('cpu') else '')")
else
    DEVICE=cuda
    MODELS=(vit_small_patch16_224 vit_base_patch16_224)
    BENCH=(--device cuda --img-size 224 --batch 256 --steps 10 --warmup 3
           --workers 12)
    CROPS=1024
    KERNELS=(--device cuda --rounds 3 --calls 20)
    CONFIG=mmseg_configs/pretrain/glare_vit-b16_1xb64-20k_unlabeled-224.py
    TRAIN=(train_cfg.max_iters=20 train_dataloader.num_workers=8
           default_hooks.logger.interval=5)
    AMP=--amp
fi
DATA="$OUT/crops"
TRAIN+=(model.backbone.checkpoint=None "train_dataloader.dataset.data_root=$DATA"
        default_hooks.checkpoint.interval=1000)
mkdir -p "$DATA"

section() {  # section TITLE COMMAND...: runs COMMAND, reports its output
    local title=$1 start status=0
    shift
    echo "== $title" >&2
    start=$(date +%s)
    "$@" >"$OUT/step.log" 2>&1 || status=$?
    {
        echo "## $title"
        echo
        echo "\`$*\` (exit $status, $(($(date +%s) - start)) s)"
        echo
        echo '```'
        grep -v "is skipped since\|paramwise_options" "$OUT/step.log" | tail -n 40
        echo '```'
        echo
    } >>"$REPORT"
    FAILED=$((FAILED + (status != 0)))
}

FAILED=0
{
    echo "# GPU suite ($(date -u +%Y-%m-%dT%H:%MZ)${SMOKE:+, smoke run on the CPU})"
    echo
    echo "Device: $("$PYTHON" -c "import torch
print(torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU only')"),"
    echo "torch $("$PYTHON" -c 'import torch; print(torch.__version__)'), commit"
    echo "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)."
    echo
} >"$REPORT"

section "CUDA-only tests" \
    "$PYTHON" -m pytest -q -m cuda -p no:cacheprovider \
    $(grep -rl "NEEDS_CUDA\|DEVICES\|mark.cuda" tests --include="test_*.py")
section "Step throughput: two-view DINO vs GLARE (defaults), bf16" \
    "$PYTHON" benchmarks/step_throughput.py "${BENCH[@]}" --models "${MODELS[@]}" \
    --amp --count-flops --peak-tflops 989
section "Attention kernels: SDPA vs matmul (UniAdapterViT attention='auto' uses SDPA on CUDA)" \
    "$PYTHON" benchmarks/attention_kernels.py "${KERNELS[@]}"
section "Real crops for the end-to-end runs" \
    "$PYTHON" -c "from tests.conftest import real_photo
photo = real_photo()  # 512 x 600
for i in range($CROPS):
    left, top = 7 * i % 256, 13 * i % 344
    photo.crop((left, top, left + 256, top + 256)).save(f'$DATA/{i}.jpg')
print($CROPS, 'crops of 256 px in $DATA')"
section "End to end: GLARE with data loading from $CROPS real crops, bf16" \
    "$PYTHON" benchmarks/step_throughput.py "${BENCH[@]}" --models "${MODELS[0]}" \
    --amp --data-dir "$DATA"
section "tools/train.py $AMP pre-training" \
    "$PYTHON" tools/train.py "$CONFIG" $AMP --work-dir "$OUT/train" \
    --cfg-options "${TRAIN[@]}"
# mmengine's pytorch launcher calls torch.cuda.set_device: GPU only.
if [ -z "$SMOKE" ]; then
    section "tools/dist_train.sh with one GPU" \
        env PYTHON="$PYTHON" PORT=$((29500 + RANDOM % 1000)) bash tools/dist_train.sh \
        "$CONFIG" 1 $AMP --work-dir "$OUT/dist_train" --cfg-options "${TRAIN[@]}"
fi
rm -rf "$DATA" "$OUT/step.log"
echo "Report: $REPORT ($FAILED failed sections)" >&2
exit $((FAILED > 0))
