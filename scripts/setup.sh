#!/usr/bin/env bash
# One-command set-up: creates .venv with the pinned stack and installs deeppose-fast (editable).
# Idempotent: each step is skipped when what it installs already imports with the right version.
#   bash scripts/setup.sh            # .venv in the repository root
#   VENV=/path/to/venv bash scripts/setup.sh
# Versions and build flags follow ../shared/STACK.md (measured on the 2-core CPU machine kind).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"

TF_VERSION=2.21.0
HOROVOD_VERSION=0.28.1
DALI_VERSION=2.4.0
CUDA_HEADERS_VERSION=12.9

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
has_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }

if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtual environment $VENV"
  "$PY" -m venv "$VENV"
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
python -m pip install -q --upgrade "pip>=24" "setuptools>=70" wheel

pyok() { python "$@" >/dev/null 2>&1; }

# 1. TensorFlow (CPU build unless an NVIDIA GPU answers) and the pure-Python / wheel stack.
if has_gpu; then TF_PKG="tensorflow[and-cuda]==$TF_VERSION"; else TF_PKG="tensorflow-cpu==$TF_VERSION"; fi
if pyok -c "import tensorflow as tf, sys; sys.exit(tf.__version__ != '$TF_VERSION')" \
   && pyok -c "import numba, scipy, cv2, click, tqdm, pytest, tensorboard, matplotlib"; then
  log "TensorFlow $TF_VERSION and the Python stack: already installed"
else
  log "installing $TF_PKG, tensorboard, numba, numpy, scipy, opencv-python-headless, click, tqdm, matplotlib, pytest"
  python -m pip install -q "$TF_PKG" "tensorboard==2.21.*" "numba==0.68.*" numpy scipy "opencv-python-headless>=4.9" \
    "click>=8.1" "tqdm>=4.66" "matplotlib>=3.8" "pytest>=8" "cmake>=3.25,<4" ninja
fi

# 2. NVIDIA DALI and CUDA headers (the TF plugin and the native operator compile against them).
if pyok -c "import nvidia.dali as d, sys; sys.exit(d.__version__ != '$DALI_VERSION')"; then
  log "DALI $DALI_VERSION: already installed"
else
  log "installing nvidia-dali-cuda120==$DALI_VERSION (a 424 MB wheel)"
  python -m pip install -q "nvidia-dali-cuda120==$DALI_VERSION"
fi
CUDA_HEADERS="$VENV/cuda"
if [ ! -f "$CUDA_HEADERS/include/cuda_runtime_api.h" ]; then
  log "collecting CUDA $CUDA_HEADERS_VERSION headers into $CUDA_HEADERS"
  tmp="$(mktemp -d)"
  python -m pip install -q --no-deps --target "$tmp" \
    "nvidia-cuda-runtime-cu12==$CUDA_HEADERS_VERSION.*" "nvidia-cuda-nvcc-cu12==$CUDA_HEADERS_VERSION.*" \
    "nvidia-cuda-cccl-cu12==$CUDA_HEADERS_VERSION.*"
  mkdir -p "$CUDA_HEADERS/include"
  for inc in "$tmp"/nvidia/*/include; do cp -r "$inc"/. "$CUDA_HEADERS/include/"; done
  rm -rf "$tmp"
fi
export CUDA_HOME="$CUDA_HEADERS"

# 3. DALI's TensorFlow plugin compiles against the installed TF: no build isolation.
if pyok -c "import nvidia.dali.plugin.tf"; then
  log "DALI TensorFlow plugin: already installed"
else
  log "building nvidia-dali-tf-plugin-cuda120==$DALI_VERSION against TF (about 40 s)"
  python -m pip install -q --no-build-isolation "nvidia-dali-tf-plugin-cuda120==$DALI_VERSION"
fi

# 4. Horovod, compiled against the installed TF with Gloo (and NCCL on GPU hosts).
if pyok -c "import horovod.tensorflow as hvd, horovod, sys; sys.exit(horovod.__version__ != '$HOROVOD_VERSION')"; then
  log "Horovod $HOROVOD_VERSION: already installed"
else
  log "building horovod==$HOROVOD_VERSION against TF with Gloo (about 200 s on 2 cores)"
  TF_INC="$(python -c 'import tensorflow as tf; print(tf.sysconfig.get_include())')"
  SHIM="$VENV/horovod-shim"
  mkdir -p "$SHIM/tensorflow/compiler/xla/client"
  # TF >= 2.19 moved xla_builder.h; Horovod 0.28.1 still includes the old path.
  echo '#include "xla/hlo/builder/xla_builder.h"' > "$SHIM/tensorflow/compiler/xla/client/xla_builder.h"
  export CXXFLAGS="${CXXFLAGS:-} -I$TF_INC/external/highwayhash -I$TF_INC/external/farmhash_archive/src -I$SHIM"
  export HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 \
         HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 MAKEFLAGS="-j$(nproc)" CMAKE_POLICY_VERSION_MINIMUM=3.5
  if has_gpu; then
    python -m pip install -q nvidia-nccl-cu12
    NCCL_DIR="$(python -c 'import nvidia.nccl, os; print(os.path.dirname(nvidia.nccl.__file__))')"
    export HOROVOD_GPU_OPERATIONS=NCCL HOROVOD_NCCL_INCLUDE="$NCCL_DIR/include" HOROVOD_NCCL_LIB="$NCCL_DIR/lib"
  fi
  python -m pip install -q --no-build-isolation --no-cache-dir "horovod==$HOROVOD_VERSION"
fi

# 5. The package itself (editable), which builds the native DALI operator in csrc/ with CMake.
# Skipped when the package is installed from this checkout and the operator matches the csrc/ sources.
if (cd "$ROOT" && pyok -c "import deeppose_fast.cli, os, sys; from deeppose_fast.pipeline import native; \
    native.check_build(); sys.exit(os.path.dirname(deeppose_fast.cli.__file__) != os.path.join('$ROOT', 'deeppose_fast'))") \
   && [ -x "$VENV/bin/deeppose-fast" ]; then
  log "deeppose-fast (editable) with an up-to-date native operator: already installed"
else
  log "installing deeppose-fast (editable) and building csrc/"
  python -m pip install -q --no-build-isolation --no-deps -e "$ROOT" 2>&1 \
    | { grep -vE "^\s*(\*|!!|$)|careful with folders|same name as your package|take precedence|WheelFile|BuildBackendWarning" || true; }
fi
log "done: activate with 'source $VENV/bin/activate'"
