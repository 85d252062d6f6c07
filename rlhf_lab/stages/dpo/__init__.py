"""The DPO stage: direct preference optimization and its variants (Rafailov 2023; Azar 2023; Mitchell
2023; Meng 2024), offline or online.

    pairs.py    preference pairs as token ids; sequence log-probs through RL's padding-free passes
    loss.py     the loss of a batch by dpo.loss (the pure functions of rlhf_lab.losses), implicit rewards
    sources.py  offline pairs, or online rounds sampled with rlhf_lab.comparisons; reference log-probs, kept
    module.py   the LightningModule: one optimizer step per batch of pairs
    metrics.py  dpo/train/*, dpo/val/* (held-out pairs), dpo/eval/* (held-out samples, as RL's)
    stage.py    upstream, checks, cache key, build, export
"""
