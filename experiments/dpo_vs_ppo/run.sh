#!/usr/bin/env bash
# The reward–KL frontier of experiments/dpo_vs_ppo/README.md: DPO over β, PPO over β and best-of-n,
# 3 seeds each, into one folder, then its report (frontier.md, frontier.png and the usual tables).
#   bash experiments/dpo_vs_ppo/run.sh [OUT]      # OUT: $RLHF_LAB_HOME/runs/multirun/dpo_vs_ppo by default
#   PPO_GOLD=1 bash experiments/dpo_vs_ppo/run.sh  # also PPO against the gold reward itself (PPO-GT)
set -euo pipefail
OUT=${1:-${RLHF_LAB_HOME:-lab}/runs/multirun/dpo_vs_ppo}
PARALLEL=(hydra/launcher=local_parallel hydra.launcher.n_jobs=2)  # two single-thread jobs on 2 cores

# The shared upstream once, on both cores: pretrain and SFT (reused if the lab has them), the 2,000
# prompts' pairs, the reward model that PPO and best-of-n maximize.
rlhf-lab experiment=dpo_vs_ppo stage=reward

export OMP_NUM_THREADS=1
rlhf-lab -m experiment=dpo_vs_ppo stage=dpo dpo.beta=0.03,0.1,0.3,1 dpo.seed=0,1,2 \
  "${PARALLEL[@]}" hydra.sweep.dir="$OUT/dpo"
rlhf-lab -m experiment=dpo_vs_ppo stage=rl algo=ppo algo.kl.beta=0.02,0.05,0.2 rl.seed=0,1,2 \
  "${PARALLEL[@]}" hydra.sweep.dir="$OUT/ppo"
rlhf-lab -m experiment=dpo_vs_ppo stage=bon bon.seed=0,1,2 "${PARALLEL[@]}" hydra.sweep.dir="$OUT/bon"
if [[ -n "${PPO_GOLD:-}" ]]; then
  rlhf-lab -m experiment=dpo_vs_ppo stage=rl algo=ppo objective=gold algo.kl.beta=0.05 rl.seed=0,1,2 \
    "${PARALLEL[@]}" hydra.sweep.dir="$OUT/ppo_gold"
fi
unset OMP_NUM_THREADS
rlhf-lab-report "$OUT"
