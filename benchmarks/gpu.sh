#!/usr/bin/env bash
# The GPU figures of docs/benchmarks.md: one JSON object per line in
# OUTDIR/results.jsonl, each under the name of its row, and each command's
# log beside it.
#
#   bash benchmarks/gpu.sh imagenet|cifar|schedule [OUTDIR]
#
# imagenet: ResNet-18/34/50/101/152 training steps, bfloat16, batch 256, on
#   synthetic batches (--synthetic: the lent GPU machines have no
#   TensorFlow, so no JPEG pipeline; the host pipeline is timed on CPUs with
#   --input_only), ResNet-50 in float32 too, the latency-hiding scheduler
#   on and off, and the PyTorch reference (benchmarks/compare_torch.py).
# cifar: ResNet-20 step and loop on the bundled sample, one and ten steps
#   per dispatch, float32 and bfloat16, with XLA's command buffers off;
#   ResNet-56/110; the PyTorch reference.
# schedule: the paper's whole ResNet-20 recipe (64k steps at batch 128,
#   evaluating every 4k steps) timed end to end with train.py.
set -uo pipefail
part=${1:?imagenet, cifar or schedule}
out=${2:-gpu_results}
mkdir -p "$out"
cifar=(--config.data.local_dir=data/cifar10-sample --config.data.eval_on=none)

# row NAME COMMAND...: runs COMMAND, appends its last stdout line (JSON)
# under NAME, or the failure, to results.jsonl.
row() {
  local name=$1
  shift
  echo "== $name: $*" >&2
  local last
  last=$(timeout "${ROW_TIMEOUT:-400}" "$@" 2>"$out/$name.log" | tail -1)
  if [[ $last == '{'* ]]; then
    echo "{\"name\": \"$name\", \"result\": $last}" | tee -a "$out/results.jsonl"
  else
    echo "{\"name\": \"$name\", \"failed\": true}" | tee -a "$out/results.jsonl"
    tail -5 "$out/$name.log" >&2
  fi
}
bench=(python3 -m resnet_jax.benchmark)
torch_ref=(python3 benchmarks/compare_torch.py)

case $part in
imagenet)
  r50=(--config=configs/imagenet.py:resnet50,dtype=bfloat16 --synthetic)
  row resnet50_bf16 "${bench[@]}" "${r50[@]}" --steps=100 --warmup=10
  # JAX would hold 75% of the GPU's memory from its start: PyTorch shares it.
  XLA_PYTHON_CLIENT_PREALLOCATE=false \
    row resnet50_bf16_torch "${torch_ref[@]}" "${r50[@]}" --steps=50 --warmup=10
  XLA_FLAGS=--xla_gpu_enable_latency_hiding_scheduler=true \
    row resnet50_bf16_lhs "${bench[@]}" "${r50[@]}" --steps=100 --warmup=10
  for depth in 18 34 101 152; do
    row "resnet${depth}_bf16" "${bench[@]}" --synthetic --steps=50 \
      --warmup=5 "--config=configs/imagenet.py:resnet${depth},dtype=bfloat16"
  done
  row resnet50_f32 "${bench[@]}" --config=configs/imagenet.py:resnet50 \
    --synthetic --steps=50 --warmup=5
  ;;
cifar)
  r20=(--config=configs/cifar10.py:resnet20 "${cifar[@]}")
  row resnet20_f32_k1 "${bench[@]}" "${r20[@]}" --steps=400 --warmup=20
  XLA_FLAGS=--xla_gpu_enable_command_buffer= \
    row resnet20_f32_k1_no_command_buffers "${bench[@]}" "${r20[@]}" \
    --steps=400 --warmup=20
  row resnet20_f32_k10 "${bench[@]}" "${r20[@]}" --steps=1000 --warmup=20 \
    --config.train.steps_per_dispatch=10
  row resnet20_bf16_k10 "${bench[@]}" "${r20[@]}" --steps=1000 --warmup=20 \
    --config.train.steps_per_dispatch=10 --config.model.dtype=bfloat16
  XLA_PYTHON_CLIENT_PREALLOCATE=false \
    row resnet20_f32_torch "${torch_ref[@]}" "${r20[@]}" --steps=200 --warmup=20
  for depth in 56 110; do
    row "resnet${depth}_f32_k10" "${bench[@]}" "${cifar[@]}" \
      "--config=configs/cifar10.py:resnet${depth}" --steps=500 --warmup=20 \
      --config.train.steps_per_dispatch=10
  done
  ;;
schedule)
  # Evaluations on a 500-image validation split of the sample (the real
  # test set is 10k images: about 20x the evaluation work, still small).
  start=$(date +%s.%N)
  timeout 590 python3 train.py --config=configs/cifar10.py:resnet20 \
    --config.data.local_dir=data/cifar10-sample \
    --config.data.validation_size=500 --config.data.eval_on=validation \
    --config.train.steps_per_dispatch=10 --workdir="$out/resnet20_full" \
    >"$out/schedule.log" 2>&1
  rc=$?
  end=$(date +%s.%N)
  echo "{\"name\": \"resnet20_schedule\", \"exit\": $rc, \"wall_seconds\": \
$(python3 -c "print(round($end - $start, 1))")}" | tee -a "$out/results.jsonl"
  ;;
*)
  echo "unknown part $part: imagenet, cifar or schedule" >&2
  exit 2
  ;;
esac
