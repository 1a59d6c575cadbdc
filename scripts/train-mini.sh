#!/usr/bin/env bash
# paella-mini from scratch on one GPU, in stages of under ten minutes each, then a CPU stage:
#   scripts/train-mini.sh codes    RUNS  # the VQGAN (FSQ; from halfway on its decoder also learns to mend
#                                        # stray tokens) and the CLIP side by side (CODES_MINUTES, 8.8)
#   scripts/train-mini.sh denoiser RUNS  # the denoiser on those codes, alone on the GPU (DENOISER_MINUTES, 9.0)
#   scripts/train-mini.sh more     RUNS  # the denoiser further (MORE_MINUTES, 4.6; the shipped weights had it)
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

# MINUTES OUT [more denoiser arguments]: the denoiser on the codes stage's VQGAN and CLIP
denoiser() {
    local m=$1 out=$2
    shift 2
    train denoiser --out "$out" --vqgan "$runs/codes" --clip "$runs/codes" --device "$device" --minutes "$m" "$@"
}

case "$stage" in
codes)
    m=${CODES_MINUTES:-8.8}
    train vqgan --quantizer fsq --token-noise 0.04 --out "$runs/codes" --device "$device" --minutes "$m" &
    vq=$!
    train clip --out "$runs/codes" --device "$device" --minutes "$m" &
    clip=$!
    wait "$vq"
    wait "$clip"
    ;;
denoiser)
    denoiser "${DENOISER_MINUTES:-9.0}" "$runs/denoiser"
    ;;
more)
    denoiser "${MORE_MINUTES:-4.6}" "$runs/denoiser2" --init "$runs/denoiser" --lr 5e-4
    ;;
pack)
    den=$runs/denoiser
    [[ -f $runs/denoiser2/denoiser.safetensors ]] && den=$runs/denoiser2
    mkdir -p "$runs/parts"
    cp "$runs/codes/clip.safetensors" "$runs/codes/vqgan.safetensors" "$den/denoiser.safetensors" "$runs/parts/"
    "$py" -m training pack --parts "$runs/parts" --out weights/paella-mini
    "$py" -m training eval --weights weights/paella-mini --out "$runs/eval.json" --ops 100
    "$py" -m training pack --parts "$runs/parts" --out weights/paella-mini --results "$runs/eval.json"
    ;;
*)
    echo "unknown stage $stage" >&2
    exit 2
    ;;
esac
