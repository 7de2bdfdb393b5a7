#!/usr/bin/env bash
# Write requirements/*.lock: every Python package gen3d installs, pinned with sha256 hashes by
# `uv pip compile`, for Linux x86_64 and CPython 3.11 (the image's Python and CI's).
#
#   runtime.lock     pyproject's dependencies without torch (the container image)
#   test.lock        the same plus the `test` extra (scripts/setup.sh: the README's set-up)
#   torch-cuda.lock  torch's CUDA build from PyPI with its CUDA libraries (GPU machines, the image)
#   torch-cpu.lock   torch's CPU build (CI, the tests, the image test), from PyTorch's CPU wheels
#
# The versions are those of the environment the tests passed in: .venv's `pip freeze` is the
# constraint, so a lock change is a deliberate upgrade (upgrade .venv, run the tests, run this).
# torch's CPU build must be findable: set TORCH_CPU_WHEELS to a folder or an index page
# (default: $PIP_FIND_LINKS, else https://download.pytorch.org/whl/cpu).
set -euo pipefail
cd "$(dirname "$0")/.."
torch_version=2.13.0
cpu_wheels="${TORCH_CPU_WHEELS:-${PIP_FIND_LINKS:-https://download.pytorch.org/whl/cpu}}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
.venv/bin/python -m pip freeze --exclude-editable > "$scratch/tested.txt"
compile() {
  .venv/bin/uv pip compile --quiet --generate-hashes --no-annotate --python-version 3.11 \
    --python-platform x86_64-manylinux_2_28 --no-header --find-links "$cpu_wheels" "$@"
}
mkdir -p requirements
compile pyproject.toml -c "$scratch/tested.txt" --no-emit-package torch -o requirements/runtime.lock
compile pyproject.toml --extra test -c "$scratch/tested.txt" --no-emit-package torch -o requirements/test.lock
echo "torch==$torch_version" > "$scratch/torch-cuda.in"
# The CUDA build comes from PyPI alone, so that the local CPU build cannot stand in for it.
.venv/bin/uv pip compile --quiet --generate-hashes --no-annotate --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
  --no-header "$scratch/torch-cuda.in" -c requirements/runtime.lock -o requirements/torch-cuda.lock
echo "torch==$torch_version+cpu" > "$scratch/torch-cpu.in"
compile "$scratch/torch-cpu.in" -c requirements/runtime.lock -o requirements/torch-cpu.lock
echo "wrote requirements/{runtime,test,torch-cuda,torch-cpu}.lock"
