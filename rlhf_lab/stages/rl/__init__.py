"""The RL stage: the policy against the objective with a KL penalty to the reference.

experience.py  the experience of a step (log-probs, KL-penalized rewards, advantages), the critic
algorithms.py  the algorithm table: PPO, REINFORCE, RLOO, GRPO, ... (advantages, loss, aggregation,
               and where the KL goes: `Algorithm.kl_placement`)
module.py      the LightningModule: rollout → score → experience → update → log
staleness.py   stale rollouts: the sampler k steps behind the learner (rl.staleness)
metrics.py     rl/train/* and the held-out rl/eval/*
stage.py       upstream, artifact key, build, export, resume: its `STAGE`
The prompt stream, the reference and micro-batches are `rlhf_lab.policy`'s, shared with DPO.
"""
