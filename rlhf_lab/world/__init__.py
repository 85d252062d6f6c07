"""The tiny offline world: a generated review corpus, a local BPE tokenizer and a tiny Llama.

Built once per world config into `paths.world/<hash>/` and reused. Everything downstream loads it
through `from_pretrained` and `datasets`, the same code paths that load hub models and datasets:

    <hash>/corpus.jsonl        {"text"}                    pretraining documents
    <hash>/sft.jsonl           {"prompt", "completion"}    review openings and their continuations
    <hash>/prompts.jsonl       {"prompt"}                  review openings for collection and RL
    <hash>/eval_prompts.jsonl  {"prompt"}                  held-out openings for evaluation
    <hash>/init/               tokenizer + randomly initialized tiny Llama (a standard HF folder)

With `world.conversational=true` the same texts come in TRL's conversational form: sft.jsonl
{"prompt": [user], "completion": [assistant]}, the prompts {"prompt": [user]}, and the tokenizer's chat
template ends each assistant turn with EOS (`tokenizer.CONVERSATION_TEMPLATE`), so the whole pipeline
runs on chat data.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from rlhf_lab.artifacts import building, claim, config_hash, is_complete
from rlhf_lab.config import WorldConfig
from rlhf_lab.world.corpus import corpus_stats, generate_documents
from rlhf_lab.world.model import build_tiny_llama
from rlhf_lab.world.tasks import as_conversation, make_prompts, make_sft_pairs
from rlhf_lab.world.tokenizer import CHAT_TEMPLATE, CONVERSATION_TEMPLATE, train_tokenizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class World:
    """The files of one built world (layout in the module docstring)."""

    root: Path

    @property
    def corpus(self) -> Path:
        return self.root / "corpus.jsonl"

    @property
    def sft(self) -> Path:
        return self.root / "sft.jsonl"

    @property
    def prompts(self) -> Path:
        return self.root / "prompts.jsonl"

    @property
    def eval_prompts(self) -> Path:
        return self.root / "eval_prompts.jsonl"

    @property
    def init_model(self) -> Path:
        return self.root / "init"


def world_key(cfg: WorldConfig) -> str:
    settings = world_settings(cfg)
    if not settings["conversational"]:  # worlds built before the setting existed keep their key
        del settings["conversational"]
    return config_hash(settings)


def world_settings(cfg: WorldConfig) -> dict:
    """What builds the world: every setting but the named model sizes, which the pretrain stage builds."""
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k != "sizes"}


def build_world(cfg: WorldConfig, cache_dir: str | Path) -> World:
    """Return the world for `cfg`, generating it on first use (a few seconds to a minute)."""
    key = world_key(cfg)
    world = World(Path(cache_dir).resolve() / key)
    with claim(world.root):  # parallel jobs build it once
        if is_complete(world.root):
            return world
        log.info("building the tiny world %s in %s", key, world.root)
        with building(world.root, stage="world", key=key, config=world_settings(cfg)) as tmp:
            _generate(cfg, World(tmp))
    return world


def _generate(cfg: WorldConfig, world: World) -> None:
    docs = generate_documents(cfg.n_documents, seed=cfg.seed)
    n_sft, n_prompt = int(len(docs) * cfg.sft_fraction), int(len(docs) * cfg.prompt_fraction)
    corpus, sft_docs, prompt_docs = (
        docs[: -n_sft - n_prompt],
        docs[-n_sft - n_prompt : -n_prompt],
        docs[-n_prompt:],
    )
    prompts = make_prompts(prompt_docs, seed=cfg.seed)
    n_eval = min(cfg.eval_prompts, len(prompts) // 2)
    chat = as_conversation if cfg.conversational else (lambda row: row)
    _write_jsonl(world.corpus, [{"text": d} for d in corpus])
    _write_jsonl(world.sft, [chat(row) for row in make_sft_pairs(sft_docs, seed=cfg.seed)])
    _write_jsonl(world.prompts, [chat({"prompt": p}) for p in prompts[n_eval:]])
    _write_jsonl(world.eval_prompts, [chat({"prompt": p}) for p in prompts[:n_eval]])

    template = CONVERSATION_TEMPLATE if cfg.conversational else CHAT_TEMPLATE
    tokenizer = train_tokenizer(corpus, vocab_size=cfg.vocab_size, chat_template=template)
    model = build_tiny_llama(cfg.model, tokenizer, seed=cfg.seed)
    model.save_pretrained(world.init_model)
    tokenizer.save_pretrained(world.init_model)
    stats = corpus_stats(docs) | {"parameters": sum(p.numel() for p in model.parameters())}
    (world.root / "metrics.json").write_text(json.dumps(stats, indent=2))


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
