#!/usr/bin/env bash
# The device check of issues 16 and 14, prepared for one call of a lent GPU machine (see /work/.library/device): the
# GPU tests (training included), then the volume kernel's bandwidth, then segmentation throughput on the GPU against the CPU.
# Results go to $OUT (or ./gpu-check): copy the tables into benchmarks/RESULTS.md with the device's name.
#
# The machine must have the project's `gpu` extra (CuPy, dask-cuda) and the dev extra installed, e.g. from wheels
# carried with the working tree. Each step's exit status is recorded and the script goes on, so one failure does
# not hide the others' numbers.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-check}
mkdir -p "$out"
python=${PYTHON:-python3}
status=0

step() {  # step NAME COMMAND...: run it, its output into $out/NAME.txt, and note its exit status
  local name=$1
  shift
  echo "== $name: $*" | tee -a "$out/summary.txt"
  "$@" >"$out/$name.txt" 2>&1
  local rc=$?
  echo "   exit $rc" | tee -a "$out/summary.txt"
  tail -n 25 "$out/$name.txt"
  [ "$rc" = 0 ] || status=1
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$out/device.txt" 2>&1
cat "$out/device.txt"
# the CuPy cases of the array-API tests, the CUDA kernel, the stage on a GPU worker (real kernel, not the simulator)
step tests "$python" -m pytest -q -rs tests/test_array_api.py tests/test_cut_fill.py tests/test_volume_workers.py \
  tests/test_segment_memory.py
# training on the GPU (--device auto): the same call gives the same weights there too
step train_tests "$python" -m pytest -q -rs tests/test_segment.py -k "reproducible or input_errors"
step gpu_volume "$python" benchmarks/gpu_volume.py --size 20000 --sites 10000
step segment_cpu "$python" benchmarks/segment_throughput.py --device cpu
step segment_gpu "$python" benchmarks/segment_throughput.py --device cuda
exit $status
