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

# MINUTES DENOISER_OUT DECODER_INIT DECODER_OUT DECODER_LR [more denoiser arguments]: the denoiser on the
# codes, and beside it the VQGAN's decoding side (encoder frozen) learning to mend stray tokens
denoiser_beside_decoder() {
    local m=$1 den_out=$2 dec_init=$3 dec_out=$4 dec_lr=$5
    shift 5
    train denoiser --out "$den_out" --vqgan "$runs/codes" --clip "$runs/codes" --device "$device" \
        --minutes "$m" "$@" &
    local den=$!
    train vqgan --init "$dec_init" --out "$dec_out" --device "$device" --minutes "$m" \
        --batch 128 --lr "$dec_lr" --token-noise 0.04 &
    local dec=$!
    wait "$den"
    wait "$dec"
}

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
    denoiser_beside_decoder "${DENOISER_MINUTES:-9.0}" "$runs/denoiser" "$runs/codes" "$runs/decoder" 2e-4
    ;;
more)
    denoiser_beside_decoder "${MORE_MINUTES:-8.4}" "$runs/denoiser2" "$runs/decoder" "$runs/decoder2" 1e-4 \
        --init "$runs/denoiser" --lr 5e-4
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
