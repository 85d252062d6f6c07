"""Every stage of the pipeline, each held to one contract (`contract.Stage`, its module's `STAGE`):

    pretrain.py sft.py   causal-LM training of the base model and the SFT policy (both through lm.py)
    collect.py           K completions per prompt, paired and labeled (rlhf_lab.comparisons)
    reward.py            the Bradley–Terry reward model
    rl/                  RL against the objective with a KL penalty: the algorithm table, the module
    dpo/                 DPO and its variants, offline or online
    bon.py               best-of-n, the training-free baseline
    evaluate.py          SFT against the trained policies and best-of-n on held-out prompts
    common.py            what every stage receives (Context), keys, fitting with a Trainer
No stage imports another stage: what two stages share lives in common.py, lm.py or below the stages
(rlhf_lab.policy, rlhf_lab.comparisons).
"""
