"""An RLHF world small enough to enumerate, where the KL-regularized optimum is known exactly.

One prompt; V content tokens and EOS (id V); a completion is up to L tokens, ended by EOS or cut at L
(V = 3, L = 3: 1 + 3 + 9·4 = 40 completions). A policy is tabular and autoregressive: one row of V + 1
logits per prefix of content tokens shorter than L (S rows), π(y) = Π_t softmax(logits[s_t])[y_t], so it
can represent every distribution over completions. The world fixes a reward r(y) on every completion, a
reference π_ref (seeded logits) and β, and gives exactly, by enumeration:

    π*(y) = π_ref(y)·exp(r(y)/β) / Z,   max_π E_π[r] − β·KL(π‖π_ref) = β·log Z   (Rafailov 2023, eq. 4)

and, for any π, J(π*) − J(π) = β·KL(π‖π*). It also gives the exact optimum of the losses whose target is
not π* (`ipo_optimum`, `preference_optimum`, `k3_fixed_point`), so that a biased loss is checked against
what it should converge to. Pure torch, float64, nothing else of rlhf_lab.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

Tensor = torch.Tensor
DTYPE = torch.float64


@dataclass(frozen=True)
class EnumerableWorld:
    """Every completion of the world (Y of them, L tokens at most) and its tabular structure."""

    tokens: Tensor  # (Y, L) long: token ids, 0 past the end
    mask: Tensor  # (Y, L) long: 1 on the completion's tokens (EOS included), as a Rollout's
    states: Tensor  # (Y, L) long: the prefix (row of a logits table) each token is drawn from
    children: Tensor  # (S, V+1) long: the prefix that token a extends s to, −1 if it ends the completion
    ends: Tensor  # (S, V+1) long: the completion that token a ends at s, −1 if it continues
    reward: Tensor  # (Y,) r(y)
    ref_logits: Tensor  # (S, V+1) π_ref's logits
    beta: float

    @property
    def eos(self) -> int:
        return self.ref_logits.shape[1] - 1

    @property
    def lengths(self) -> Tensor:
        return self.mask.sum(-1)  # (Y,) tokens, EOS included

    def logprobs(self, logits: Tensor) -> Tensor:
        """(Y,) log π(y) of every completion under a logits table (S, V+1)."""
        return self.token_logprobs(logits, torch.arange(len(self.reward))).sum(-1)  # (Y,)

    def token_logprobs(self, logits: Tensor, index: Tensor) -> Tensor:
        """(B, L) log π(y_t | y_<t) of the completions `index` (B,), 0 past their end."""
        table = logits.log_softmax(-1)  # (S, V+1)
        per_token = table[self.states[index], self.tokens[index]]  # (B, L)
        return torch.where(self.mask[index].bool(), per_token, torch.zeros_like(per_token))  # (B, L)

    @property
    def ref_logprobs(self) -> Tensor:
        return self.logprobs(self.ref_logits)  # (Y,)

    def sample(self, logits: Tensor, n: int, generator: torch.Generator) -> Tensor:
        """(n,) indices of completions drawn from π (the same law as sampling token by token)."""
        return torch.multinomial(self.logprobs(logits).exp(), n, replacement=True, generator=generator)

    # ------------------------------------------------------------------------------- exact values
    def optimum(self) -> Tensor:
        """(Y,) log π*(y) = log π_ref(y) + r(y)/β − log Z (Rafailov 2023, eq. 4)."""
        return (self.ref_logprobs + self.reward / self.beta).log_softmax(-1)  # (Y,)

    def optimal_value(self) -> float:
        """max_π E_π[r] − β·KL(π‖π_ref) = β·log E_{π_ref}[exp(r/β)]."""
        return self.beta * torch.logsumexp(self.ref_logprobs + self.reward / self.beta, -1).item()

    def objective(self, logp: Tensor) -> float:
        """J(π) = E_π[r] − β·KL(π‖π_ref) of a distribution given by its log-probs (Y,)."""
        return (logp.exp() @ self.reward).item() - self.beta * kl(logp, self.ref_logprobs)

    def gap(self, logp: Tensor) -> float:
        """J(π*) − J(π) ≥ 0; equals β·KL(π‖π*)."""
        return self.optimal_value() - self.objective(logp)


def kl(logp: Tensor, logq: Tensor) -> float:
    """Exact KL(p‖q) = Σ_y p(y)(log p(y) − log q(y)) of two distributions given by their log-probs (Y,)."""
    p = logp.exp()  # (Y,)
    return torch.where(p > 0, p * (logp - logq), torch.zeros_like(p)).sum().item()


def make_world(
    vocab: int = 3, length: int = 3, beta: float = 0.5, reward_scale: float = 1.0, seed: int = 0
) -> EnumerableWorld:
    """A world of `vocab` content tokens and EOS, completions of 1 to `length` tokens, rewards
    r ~ N(0, reward_scale²) and reference logits ~ N(0, 1) per prefix, drawn from `seed`."""
    eos = vocab
    prefixes = [p for n in range(length) for p in itertools.product(range(vocab), repeat=n)]  # S
    row = {p: i for i, p in enumerate(prefixes)}
    completions = [p + (eos,) for p in prefixes] + [
        p + (a,) for p in prefixes if len(p) == length - 1 for a in range(vocab)
    ]  # ended by EOS, then cut at `length`
    tokens = torch.zeros(len(completions), length, dtype=torch.long)  # (Y, L)
    states = torch.zeros_like(tokens)  # (Y, L)
    for y, c in enumerate(completions):
        tokens[y, : len(c)] = torch.tensor(c)
        states[y, : len(c)] = torch.tensor([row[c[:t]] for t in range(len(c))])
    mask = torch.tensor([[int(t < len(c)) for t in range(length)] for c in completions])  # (Y, L)
    children = torch.full((len(prefixes), vocab + 1), -1, dtype=torch.long)  # (S, V+1)
    ends = torch.full_like(children, -1)  # (S, V+1)
    for s, p in enumerate(prefixes):
        for a in range(vocab + 1):
            if p + (a,) in row:
                children[s, a] = row[p + (a,)]
            else:
                ends[s, a] = completions.index(p + (a,))
    generator = torch.Generator().manual_seed(seed)
    reward = reward_scale * torch.randn(len(completions), generator=generator, dtype=DTYPE)  # (Y,)
    ref_logits = torch.randn(len(prefixes), vocab + 1, generator=generator, dtype=DTYPE)  # (S, V+1)
    return EnumerableWorld(tokens, mask, states, children, ends, reward, ref_logits, beta)


# ---------------------------------------------------------------------------------------- targets
def backward_induction(
    world: EnumerableWorld, solve: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
) -> Tensor:
    """(S, V+1) log-probs of a policy built from the deepest prefixes up: at each prefix s,
    `solve(π_ref(·|s) (V+1,), Q(s,·) (V+1,))` -> (π(·|s), the value of s passed to its parent), with
    Q(s, a) = r(y) when a ends y, else the value of the prefix s·a."""
    ref = world.ref_logits.softmax(-1)  # (S, V+1)
    logp, value = torch.zeros_like(ref), torch.zeros(len(ref), dtype=DTYPE)  # (S, V+1), (S,)
    for s in reversed(range(len(ref))):  # prefixes are listed shortest first: children come later
        child, end = world.children[s], world.ends[s]  # (V+1,) each
        q = torch.where(end >= 0, world.reward[end.clamp(min=0)], value[child.clamp(min=0)])  # (V+1,)
        probs, value[s] = solve(ref[s], q)
        logp[s] = probs.log()
    return logp


def soft_optimum(beta: float) -> Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """The per-prefix solver of π*: π(a|s) ∝ π_ref(a|s)·exp(Q(s,a)/β), value β·log Σ_a π_ref·exp(Q/β)
    (soft Bellman backup; Ziebart 2010, Levine 2018)."""

    def solve(ref: Tensor, q: Tensor) -> tuple[Tensor, Tensor]:
        scores = ref.log() + q / beta  # (A,)
        return scores.softmax(-1), beta * torch.logsumexp(scores, -1)

    return solve


def k3_fixed_point(world: EnumerableWorld, scale: float) -> Tensor:
    """(Y,) log-probs of the fixed point of a policy gradient `scale`·∇E_π[r] with the KL to the reference
    in the loss as the k3 estimator differentiated through π on π's own samples (GRPO's β·k3; Shao 2024).

    E_{a~π}[∇k3] = Σ_a (π(a|s) − π_ref(a|s))·∇log π(a|s), the gradient of KL(π_ref‖π) at each visited
    prefix, not of KL(π‖π_ref) and with no term for the prefixes it leads to (the two pitfalls of Tang &
    Munos 2025, "On a few pitfalls in KL divergence gradient estimation for RL"). With tabular logits the
    update vanishes where, at every prefix, scale·π(a)(Q(a) − V) = β(π(a) − π_ref(a)) with Q the expected
    reward below (no KL in it): π(a) = β·π_ref(a) / (β − scale·(Q(a) − V)), V = Σ_a π(a)Q(a), the root
    V > max Q − β/scale of Σ_a π(a) = 1 (decreasing in V), found by bisection. Dr. GRPO's group-centred
    advantages r_i − mean(r) have expectation (1 − 1/k)·∇E[r]: scale = 1 − 1/k."""
    beta = world.beta

    def solve(ref: Tensor, q: Tensor) -> tuple[Tensor, Tensor]:
        def probs(v: float) -> Tensor:
            return beta * ref / (beta - scale * (q - v))  # (A,)

        low, high = (q.max() - beta / scale).item(), q.max().item() + beta / scale
        for _ in range(200):
            middle = (low + high) / 2
            low, high = (middle, high) if probs(middle).sum() > 1 else (low, middle)
        p = probs(high)
        return p / p.sum(), p @ q / p.sum()

    return world.logprobs(backward_induction(world, solve))


def ipo_optimum(world: EnumerableWorld, tau: float) -> Tensor:
    """(Y,) log-probs of IPO's optimum on pairs y, y' ~ π_ref with Bradley–Terry labels σ(r − r') (Azar et al.
    2023: the ΨPO optimum with Ψ the identity): π(y) ∝ π_ref(y)·exp(P(y ≻ π_ref)/τ), P(y ≻ π_ref) =
    Σ_y' π_ref(y')·σ(r(y) − r(y')). Its target is the win rate against π_ref, not r."""
    ref = world.ref_logprobs  # (Y,)
    win = torch.sigmoid(world.reward[:, None] - world.reward[None, :]) @ ref.exp()  # (Y,)
    return (ref + win / tau).log_softmax(-1)  # (Y,)


def preference_optimum(
    world: EnumerableWorld, margin_loss: Callable[[Tensor], Tensor], length_normalized: bool = False
) -> Tensor:
    """(Y,) log-probs minimizing a DPO-family loss in expectation over pairs y, y' ~ π_ref with
    Bradley–Terry labels: Σ_{y,y'} π_ref(y)π_ref(y')·σ(r(y) − r(y'))·ℓ(φ(y) − φ(y')), ℓ = `margin_loss` on
    (Y, Y) margins, written from the paper's formula (not the project's code).

    φ(y) = log π(y)/π_ref(y) (DPO, cDPO, IPO), or log π(y)/|y| with `length_normalized` (SimPO, no
    reference). ℓ is convex, so Newton's method over free φ finds the one minimum (up to a shift of φ);
    log π is then φ + log π_ref, or |y|·φ, shifted along that direction so that it sums to one."""
    ref = world.ref_logprobs  # (Y,)
    weight = ref.exp()[:, None] * ref.exp()[None, :] * torch.sigmoid(world.reward[:, None] - world.reward)

    phi = _minimize_pair_risk(weight, margin_loss)  # (Y,)
    if not length_normalized:
        return (ref + phi).log_softmax(-1)
    lengths = world.lengths.to(DTYPE)  # (Y,)
    low, high = -1e3, 1e3  # the shift c of φ with Σ_y exp(|y|·(φ(y) + c)) = 1, increasing in c
    for _ in range(200):
        middle = (low + high) / 2
        low, high = (middle, high) if torch.logsumexp(lengths * (phi + middle), -1) < 0 else (low, middle)
    return (lengths * (phi + high)).log_softmax(-1)


def _minimize_pair_risk(
    weight: Tensor, margin_loss: Callable[[Tensor], Tensor], tolerance: float = 1e-10, steps: int = 50
) -> Tensor:
    """(Y,) φ minimizing R(φ) = Σ_ij w_ij·ℓ(φ_i − φ_j) for a convex ℓ, by Newton's method: with c_ij =
    w_ij·ℓ''(m_ij) + w_ji·ℓ''(m_ji) the Hessian is the graph Laplacian diag(Σ_j c_ij) − c, pseudo-inverted
    (a shift of every φ is flat); each step halved until R decreases."""

    def derivatives(phi: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        margins = (phi[:, None] - phi[None, :]).requires_grad_(True)  # (Y, Y)
        loss = margin_loss(margins)  # (Y, Y)
        (first,) = torch.autograd.grad(loss.sum(), margins, create_graph=True)  # (Y, Y) ℓ'
        (second,) = torch.autograd.grad(first.sum(), margins)  # (Y, Y) ℓ''
        return (weight * loss).sum().detach(), weight * first.detach(), weight * second

    phi = torch.zeros(len(weight), dtype=DTYPE)  # (Y,)
    for _ in range(steps):
        value, first, second = derivatives(phi)
        grad = first.sum(1) - first.sum(0)  # (Y,)
        if grad.abs().max() < tolerance:
            return phi
        curvature = second + second.T  # (Y, Y)
        hessian = torch.diag(curvature.sum(1)) - curvature  # (Y, Y)
        step = torch.linalg.pinv(hessian, hermitian=True) @ grad  # (Y,)
        size = 1.0
        while derivatives(phi - size * step)[0] > value and size > 1e-12:
            size /= 2
        phi = phi - size * step
    raise ArithmeticError(f"Newton's method did not converge: gradient {grad.abs().max():.2e}")


def dpo_family(
    beta: float, epsilon: float, gamma: float
) -> dict[str, tuple[Callable[[Tensor], Tensor], bool]]:
    """name -> (ℓ of the margin, length-normalized) of the DPO family, from the papers, for
    `preference_optimum`: DPO −log σ(β·h) (Rafailov 2023), conservative DPO −(1−ε)·log σ(β·h) − ε·log σ(−β·h)
    (Mitchell 2023), IPO (h − 1/(2τ))² with τ = β (Azar 2023), SimPO −log σ(β·m − γ) on the
    length-normalized margin m (Meng 2024)."""
    return {
        "dpo": (lambda h: -F.logsigmoid(beta * h), False),
        "cdpo": (
            lambda h: -(1 - epsilon) * F.logsigmoid(beta * h) - epsilon * F.logsigmoid(-beta * h),
            False,
        ),
        "ipo": (lambda h: (h - 1 / (2 * beta)).square(), False),
        "simpo": (lambda m: -F.logsigmoid(beta * m - gamma), True),
    }
