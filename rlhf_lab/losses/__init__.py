"""The maths of rlhf_lab as pure tensor functions; stages call these, nothing is copied between stages.

    supervised   next-token likelihood (pretraining, SFT), the Bradley–Terry loss (reward model)
    kl           every KL estimator: per token, the KL-penalized reward, the KL loss term, the exact KL,
                 β controllers, best-of-n's KL
    pg           the policy-gradient family: advantages, policy and value losses
    importance   what a loss does with its importance ratios beyond PPO's clip: CISPO, GMPO, SAPO, and the
                 corrections for a sampler that is not the learner (truncated, masked importance sampling)
    dpo          the DPO family: DPO, conservative DPO, IPO, SimPO

Every function is exported here; callers import from `rlhf_lab.losses`. Masked reductions are in
`rlhf_lab.tensors`.
"""

from rlhf_lab.losses.dpo import cdpo_loss, dpo_logratio, dpo_loss, ipo_loss, simpo_loss  # noqa: F401
from rlhf_lab.losses.importance import (  # noqa: F401
    cispo_loss,
    gmpo_loss,
    off_policy_weights,
    sapo_loss,
    weigh,
)
from rlhf_lab.losses.kl import (  # noqa: F401
    AdaptiveKLController,
    FixedKLController,
    best_of_n_kl,
    categorical_kl,
    entropy_from_logprobs,
    kl_estimate,
    kl_loss,
    kl_penalized_rewards,
)
from rlhf_lab.losses.pg import (  # noqa: F401
    dapo_loss,
    dr_grpo_advantages,
    dr_grpo_loss,
    explained_variance,
    gae,
    grpo_advantages,
    grpo_loss,
    gspo_loss,
    ppo_policy_loss,
    reinforce_loss,
    reinforce_pp_advantages,
    rloo_advantages,
    value_loss,
    varied_groups,
)
from rlhf_lab.losses.supervised import (  # noqa: F401
    bradley_terry_loss,
    causal_lm_loss,
    pairwise_differences,
    token_nll,
)
