# Sourced by the prepared GPU calls (gpu_session.sh, gpu_train.sh, gpu_compare.sh), from the repo
# root with DEVICE set: picks the Python (the GPU image's torch venv first), installs the wheels
# that image lacks from .whl/ (pydantic, pydicom, nibabel) when on CUDA, puts the repo on
# PYTHONPATH, prints the GPU, and defines TRAIN (the `ichnet-train` entry point, which the device
# cannot install).
PYTHON="${PYTHON:-}"
for candidate in /opt/torch/.venv/bin/python3 .venv/bin/python python3; do
    [ -n "$PYTHON" ] && break
    if [ -x "$candidate" ] || command -v "$candidate" >/dev/null 2>&1; then PYTHON="$candidate"; fi
done
if [ -d .whl ] && [ "$DEVICE" = "cuda" ]; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH="/tmp/site"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
TRAIN=("$PYTHON" -c 'import sys; from training.cli import train_main; sys.exit(train_main(sys.argv[1:]))')
