# On the GPU machine, sourced at the start of a device call that carried .wheels (scripts/gpu-wheels.sh):
#   source scripts/gpu-env.sh && python3 benchmarks/pipeline_gpu.py ...
# installs them once per machine into /tmp/site and puts the project and them on the path.
if [ ! -d /tmp/site/fastapi ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .wheels/*.whl || return 1
fi
export PYTHONPATH=/tmp/site:. PYTHONUNBUFFERED=1 PATH=/tmp/site/bin:$PATH
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
