#!/usr/bin/env bash
# The GPU checks in one command, from the repo root, on a machine with CUDA (< 8 minutes in all):
#
#     bash benchmarks/gpu_check.sh          # results in $OUT if set, else benchmarks/results/gpu-<date>
#
# Stages, each under its own `timeout` (its cap, or less when the whole budget runs short):
#   info          nvidia-smi and torch.cuda: devices, capability, bf16, nccl, FlexAttention import
#   cuda-tests    the tests that run differently with CUDA (see CUDA_TESTS below)
#   kernel-count  benchmarks/kernel_count.py: attention calls and CUDA kernels per micro-batch,
#                 packed per-segment loop vs padded (small fp32, smollm2-135m bf16), JSON each
#   multi-gpu     nccl data parallel and FSDP2 tests with 2 ranks; skipped with fewer than 2 GPUs
#   serve         benchmarks/serve_bench.py --model small --device cuda: reward-serve vs OpenRLHF's server
#   bench         benchmarks/vs_trl.py --model smollm2-135m --data synthetic-long --mode all --bf16
#   flex-grad     the FlexAttention prototype's gradients, which the CPU cannot compute (FLEX_TESTS)
# Then a summary of what passed, failed or was skipped; exit 1 if any stage failed. Without a CUDA
# device it prints one line and exits 2, having run nothing. Knobs: PYTHON (default python),
# GPU_CHECK_BUDGET_S (default 450: with the 10 s kill grace the total stays under 8 minutes).
set -u

cd "$(dirname "$0")/.." || exit 2
PYTHON="${PYTHON:-python}"

# --- fail fast: no CUDA, nothing to check --------------------------------------------------------
probe="$("$PYTHON" -c 'import torch; print("cuda" if torch.cuda.is_available() else "none")' 2>/dev/null | tail -n 1)"
if [ "$probe" != "cuda" ]; then
    if [ -z "$probe" ]; then
        echo "gpu_check: cannot import torch with $PYTHON; nothing run" >&2
    else
        echo "gpu_check: no CUDA device (torch.cuda.is_available() is False); nothing run" >&2
    fi
    exit 2
fi

OUTDIR="${OUT:-benchmarks/results/gpu-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUTDIR" || exit 2
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")" || exit 2 # inits and run folders: not results
trap 'rm -rf "$WORK"' EXIT
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" HF_DATASETS_OFFLINE="${HF_DATASETS_OFFLINE:-1}"
export TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 PYTHON OUTDIR # the stage functions run in `bash -c`
BUDGET="${GPU_CHECK_BUDGET_S:-450}"
START=$SECONDS
NAMES=() STATES=() TIMES=()

# stage NAME CAP_SECONDS COMMAND...: run COMMAND under timeout, log to $OUTDIR/NAME.log, record the outcome
stage() {
    local name="$1" cap="$2" left rc began
    shift 2
    left=$((BUDGET - (SECONDS - START)))
    if [ "$left" -lt 15 ]; then
        NAMES+=("$name") STATES+=("FAIL (no time left in the ${BUDGET}s budget)") TIMES+=(0)
        echo "== $name: not started, budget spent" >&2
        return
    fi
    [ "$cap" -gt "$left" ] && cap=$left
    echo "== $name (timeout ${cap}s): $*" >&2
    began=$SECONDS
    timeout --kill-after=10 "$cap" "$@" >"$OUTDIR/$name.log" 2>&1
    rc=$?
    NAMES+=("$name") TIMES+=($((SECONDS - began)))
    if [ "$rc" -eq 0 ]; then
        STATES+=("PASS")
    elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        STATES+=("FAIL (timed out after ${cap}s)")
    else
        STATES+=("FAIL (exit $rc)")
    fi
    tail -n 5 "$OUTDIR/$name.log" >&2
    echo >&2
}

skip() { # skip NAME REASON
    NAMES+=("$1") STATES+=("SKIP ($2)") TIMES+=(0)
    echo "== $1: skipped, $2" >&2
}

# --- (a) the machine ----------------------------------------------------------------------------
info() {
    if command -v nvidia-smi >/dev/null; then nvidia-smi; else echo "nvidia-smi: not on PATH"; fi
    "$PYTHON" - <<'EOF'
import importlib.util, platform, torch
try:
    nccl = ".".join(map(str, torch.cuda.nccl.version()))
except Exception as e:  # a build without nccl
    nccl = f"none ({type(e).__name__})"
print(f"python {platform.python_version()}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"cuDNN {torch.backends.cudnn.version()}, nccl {nccl}")
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"cuda:{i} {p.name}, capability {p.major}.{p.minor}, {p.total_memory / 2**30:.1f} GiB, {p.multi_processor_count} SMs")
print(f"bf16 supported: {torch.cuda.is_bf16_supported()}, TF32 matmul: {torch.backends.cuda.matmul.allow_tf32}")
print(f"flex_attention importable: {importlib.util.find_spec('torch.nn.attention.flex_attention') is not None}")
for name in ("transformers", "trl", "pytest"):
    spec = importlib.util.find_spec(name)
    print(f"{name}: {__import__(name).__version__ if spec else 'MISSING'}")
EOF
}
export -f info
stage info 30 bash -c info
GPUS="$("$PYTHON" -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null || echo 0)"

# --- (b) the tests that differ with CUDA ----------------------------------------------------------
# fp16 + GradScaler: the one test skipped without CUDA, and the scaler's unit tests (a CPU scaler);
# bf16: train.py --bf16 end to end (bf16 autocast on the GPU) and the TRL guide's RewardTrainer
# snippet, which trains in bf16 on CUDA (RewardConfig's bf16 default is True where the GPU has it).
CUDA_TESTS=(
    "tests/test_train_e2e.py::test_fp16_with_grad_scaler_on_cuda"
    "tests/test_fp16_scaler.py"
    "tests/test_train_e2e.py::test_small_conversational_run_with_every_training_feature"
    "tests/test_trainer_api.py::test_trl_guide_snippet_runs_verbatim_and_its_folder_scores_in_the_pipeline"
    "tests/test_trainer_api.py::test_trl_unset_spellings_give_our_defaults_and_cpu_gets_fp32"
)
stage cuda-tests 150 "$PYTHON" -m pytest -q -p no:cacheprovider -rs "${CUDA_TESTS[@]}"

# --- (d) kernel launches per micro-batch: the per-segment loop vs one padded batch ---------------
kernels() {
    "$PYTHON" benchmarks/kernel_count.py --model small --batch_size 8 --out "$OUTDIR/kernel_count-small.json" &&
        "$PYTHON" benchmarks/kernel_count.py --model smollm2-135m --batch_size 8 --bf16 \
            --out "$OUTDIR/kernel_count-smollm2-135m-bf16.json"
}
export -f kernels
stage kernel-count 90 bash -c kernels

# --- (b) nccl: 2 ranks, each on its own GPU (rank r calls torch.cuda.set_device(r)) ---------------
MULTI_GPU_TESTS=(
    "tests/test_distributed.py::test_two_processes_equal_one_with_the_doubled_batch[packed-accumulation-2]"
    "tests/test_fsdp.py::test_fsdp_two_processes_equal_one_with_the_doubled_batch[packed-accumulation-2-uneven]"
)
if [ "$GPUS" -ge 2 ]; then
    stage multi-gpu 150 "$PYTHON" -m pytest -q -p no:cacheprovider "${MULTI_GPU_TESTS[@]}"
else
    skip multi-gpu "$GPUS GPU: nccl DDP / FSDP tests need 2"
fi

# --- (d2) reward-serve vs OpenRLHF's reward server (benchmarks/serve_rm_baseline.py) on the GPU ----
# The small model (~20M), prompts >= 512 tokens, G = 4, 8, 16, 8 clients, 300 groups per G and server:
# on 2 CPU cores one G = 8 group costs the baseline ~0.85 s; on the GPU a few ms, so the ~1800 requests and
# the two servers' start-ups (imports, CUDA init) fit the cap. Table in serve.log, JSON beside it. It runs
# before `bench`, whose 240 s cap the budget may cut: the serving numbers are new, so they come first.
SERVE=(--model small --device cuda --requests 300 --group_sizes 4,8,16 --clients 8
    --workdir "$WORK/serve" --out "$OUTDIR/serve_bench-small-cuda.json")
stage serve 90 "$PYTHON" benchmarks/serve_bench.py "${SERVE[@]}"

# --- (c) TRL vs us on the 135M shape -------------------------------------------------------------
# Sized for one H100/H200: TRL's padded batches run ~1006 positions per pair (measured on CPU,
# benchmarks/results/20261124-045811-smollm2-135m-synthetic-long.json), so 100 steps x 8 pairs cost
# 6 x 134.5M x 1006 x 800 = 6.5e14 FLOP, under 3 s even at 25 % of ~990 TFLOP/s bf16; ours ~4x less.
# The ~4 worker processes' start-up (imports, CUDA init, loading the init, held-out eval) dominates.
BENCH=(--model smollm2-135m --data synthetic-long --mode all --bf16
    --max_steps 100 --num_pairs 1200 --repeats 1 --results_dir "$OUTDIR" --workdir "$WORK/bench")
stage bench 240 "$PYTHON" benchmarks/vs_trl.py "${BENCH[@]}"

# --- (e) the FlexAttention prototype's gradients (torch 2.13 has no FlexAttention backward on CPU) ---
# docs/gpu.md "Which path runs on CUDA": the prototype stays off until these pass on a GPU. The
# compiled kernel against the per-segment loop (d/dq, d/dk, d/dv), then a whole packed model's
# parameter gradients against the padded forward's. Last, so that it cannot take the benchmark's time.
FLEX_TESTS=(
    "tests/test_flex_attention.py::test_flex_gradients_equal_the_per_segment_loop_on_cuda"
    "tests/test_flex_attention.py::test_a_packed_model_through_flex_has_the_padded_gradients_on_cuda"
)
stage flex-grad 90 "$PYTHON" -m pytest -q -p no:cacheprovider -rs "${FLEX_TESTS[@]}"

# --- summary --------------------------------------------------------------------------------------
failed=0
for state in "${STATES[@]}"; do
    case "$state" in FAIL*) failed=1 ;; esac
done
{
    echo "gpu_check: $GPUS GPU(s), $((SECONDS - START))s, $([ "$failed" -eq 0 ] && echo "all passed" || echo "FAILED"), results in $OUTDIR"
    for i in "${!NAMES[@]}"; do
        printf '  %-13s %5ss  %s\n' "${NAMES[$i]}" "${TIMES[$i]}" "${STATES[$i]}"
    done
} | tee "$OUTDIR/summary.txt"
exit "$failed"
