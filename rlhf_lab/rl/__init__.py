"""The RL stage: the policy against the objective with a KL penalty to the reference.

experience.py  the prompt stream, the reference, the experience of a step (log-probs, KL-penalized
               rewards, advantages), micro-batches
algorithms.py  the algorithm table: PPO, REINFORCE, RLOO, GRPO (advantages, loss, aggregation, KL)
module.py      the LightningModule: rollout → score → experience → update → log
metrics.py     rl/train/* and the held-out rl/eval/*
stage.py       upstream, artifact key, build, export, resume
"""
