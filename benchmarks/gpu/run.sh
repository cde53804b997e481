#!/usr/bin/env bash
# The GPU run, on a machine with one NVIDIA GPU, Python 3.12, no network and no IREE.
# Here first:   python -m benchmarks.gpu.prepare      (compiles the bundle, downloads the wheel)
# There, from the repository root (with .gpu_bundle carried along):
#               bash benchmarks/gpu/run.sh
set -euo pipefail
site="${TMPDIR:-/tmp}/kvattn-gpu-site"
python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$site" .gpu_bundle/wheels/*.whl
# kvattn itself, laid out as pyproject.toml's package-dir maps it (no build tools needed there).
rm -rf "$site/kvattn" && mkdir -p "$site/kvattn"
cp kvattn/__init__.py "$site/kvattn/"
for sub in lowering passes runtime; do cp -r "$sub" "$site/kvattn/$sub"; done
rm -rf "$site/benchmarks" && cp -r benchmarks "$site/benchmarks"
# Run from the site folder: the repository's own kvattn/ (only __init__.py) would shadow it.
bundle="$(pwd)/.gpu_bundle"
cd "$site" && PYTHONPATH="$site" PYTHONUNBUFFERED=1 timeout 540 python3 -m benchmarks.gpu.run_on_gpu --bundle "$bundle" --device cuda "$@"
