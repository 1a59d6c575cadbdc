#!/usr/bin/env bash
# paella-mini from scratch on one GPU, in two stages of under ten minutes each, then a CPU stage:
#   scripts/train-mini.sh codes    RUNS  # the VQGAN (FSQ) and the CLIP side by side (CODES_MINUTES, 8.4)
#   scripts/train-mini.sh denoiser RUNS  # the denoiser on those codes and, beside it, the VQGAN's decoding
#                                        # side with its encoder frozen, mending stray tokens (DENOISER_MINUTES, 9.0)
#   scripts/train-mini.sh more     RUNS  # optional: both of the second pair further (MORE_MINUTES, 8.4)
#   scripts/train-mini.sh pack     RUNS  # CPU: pack into weights/paella-mini, evaluate, pack with the results
# RUNS is a folder (runs/mini); PYTHON the interpreter (python3); DEVICE (cuda) where to train.
set -euo pipefail
cd "$(dirname "$0")/.."
stage=${1:?stage: codes, denoiser, more or pack}
runs=${2:?runs folder}
py=${PYTHON:-python3}
device=${DEVICE:-cuda}
export TQDM_DISABLE=1

train() { "$py" -m training train "$@"; }

case "$stage" in
codes)
    m=${CODES_MINUTES:-8.4}
    train vqgan --quantizer fsq --out "$runs/codes" --device "$device" --minutes "$m" &
    vq=$!
    train clip --out "$runs/codes" --device "$device" --minutes "$m" &
    clip=$!
    wait "$vq"
    wait "$clip"
    ;;
denoiser)
    m=${DENOISER_MINUTES:-9.0}
    train denoiser --out "$runs/denoiser" --vqgan "$runs/codes" --clip "$runs/codes" --device "$device" --minutes "$m" &
    den=$!
    train vqgan --init "$runs/codes" --out "$runs/decoder" --device "$device" --minutes "$m" \
        --batch 128 --lr 2e-4 --token-noise 0.04 &
    dec=$!
    wait "$den"
    wait "$dec"
    ;;
more)
    m=${MORE_MINUTES:-8.4}
    train denoiser --init "$runs/denoiser" --out "$runs/denoiser2" --vqgan "$runs/codes" --clip "$runs/codes" \
        --device "$device" --minutes "$m" --lr 5e-4 &
    den=$!
    train vqgan --init "$runs/decoder" --out "$runs/decoder2" --device "$device" --minutes "$m" \
        --batch 128 --lr 1e-4 --token-noise 0.04 &
    dec=$!
    wait "$den"
    wait "$dec"
    ;;
pack)
    den=$runs/denoiser dec=$runs/decoder
    [[ -f $runs/denoiser2/denoiser.safetensors ]] && den=$runs/denoiser2
    [[ -f $runs/decoder2/vqgan.safetensors ]] && dec=$runs/decoder2
    mkdir -p "$runs/parts"
    cp "$runs/codes/clip.safetensors" "$dec/vqgan.safetensors" "$den/denoiser.safetensors" "$runs/parts/"
    "$py" -m training pack --parts "$runs/parts" --out weights/paella-mini
    "$py" -m training eval --weights weights/paella-mini --out "$runs/eval.json" --ops 100
    "$py" -m training pack --parts "$runs/parts" --out weights/paella-mini --results "$runs/eval.json"
    ;;
*)
    echo "unknown stage $stage" >&2
    exit 2
    ;;
esac
