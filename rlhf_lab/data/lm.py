"""Causal-LM training data: tokenized examples, packed pretraining blocks, and a DataModule."""

from __future__ import annotations

import logging
import random
from functools import partial

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from rlhf_lab.config import DataConfig, SourceConfig
from rlhf_lab.data.formats import Example, PreferencePair, read_examples
from rlhf_lab.data.prompts import encode_prompts
from rlhf_lab.data.sources import DataError
from rlhf_lab.tensors import IGNORE

log = logging.getLogger(__name__)


def tokenize_pairs(examples: list[Example], tokenizer, data: DataConfig, source: str) -> list[dict]:
    """Tokenize prompt/completion pairs; labels cover the completion and EOS only.

    Truncation: a prompt follows the long-prompt rule of every stage (`data.prompts.encode_prompts`:
    its last `data.max_prompt_length` tokens are kept); a completion is cut so that prompt +
    completion + EOS fits in `data.max_length`. A completion that already ends with EOS (a chat
    template's end of turn) gets no second one.
    """
    prompts = encode_prompts(tokenizer, [e.prompt for e in examples], data.max_prompt_length, source)
    completions = tokenizer([e.completion for e in examples], add_special_tokens=False)["input_ids"]
    rows = []
    for p, c in zip(prompts, completions, strict=True):
        if c and c[-1] == tokenizer.eos_token_id:  # a chat template that ends the turn with EOS
            c = c[:-1]
        c = c[: data.max_length - len(p) - 1] + [tokenizer.eos_token_id]
        rows.append({"input_ids": p + c, "labels": [IGNORE] * len(p) + c})
    return rows


def as_example(row: Example | PreferencePair) -> Example:
    """A preference pair trains a language model on its preferred completion (SFT on chosen)."""
    return Example(row.prompt, row.chosen) if isinstance(row, PreferencePair) else row


def pack_texts(examples: list[Example], tokenizer, block: int) -> list[dict]:
    """Concatenate documents (prompt + completion, framed as the tokenizer frames them, then EOS); cut
    `block`-token blocks."""
    stream: list[int] = []
    for ids in tokenizer([e.prompt + e.completion for e in examples])["input_ids"]:
        stream += ids + [tokenizer.eos_token_id]
    return [{"input_ids": stream[i : i + block]} for i in range(0, len(stream), block)]


class Rows(Dataset):
    def __init__(self, rows: list[dict]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]


def collate(rows: list[dict], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch: input_ids, attention_mask and labels (IGNORE on padding), each (B, L)."""
    length = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), length), pad_token_id)  # (B, L)
    labels = torch.full((len(rows), length), IGNORE)  # (B, L)
    mask = torch.zeros((len(rows), length), dtype=torch.long)  # (B, L)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n] = torch.tensor(r["input_ids"])
        labels[i, :n] = torch.tensor(r.get("labels", r["input_ids"]))
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class LMDataModule(L.LightningDataModule):
    """Train/validation loaders over tokenized rows; the last `val_size` shuffled examples are held out.

    `mode="pack"` packs documents into blocks (pretraining), `mode="pairs"` keeps one prompt/response
    pair per row with the loss on the response (SFT).
    """

    def __init__(
        self, src: SourceConfig, default, tokenizer, data: DataConfig, batch_size: int, mode: str, seed: int
    ):
        super().__init__()
        self.src, self.default, self.tokenizer, self.data = src, default, tokenizer, data
        self.batch_size, self.mode, self.seed = batch_size, mode, seed
        self.train_rows: list[dict] = []
        self.val_rows: list[dict] = []
        self.val_prompts: list[str] = []

    def setup(self, stage: str | None = None) -> None:
        if self.train_rows:
            return
        examples, name = read_examples(self.src, self.default, self.tokenizer, self.data.on_bad_row)
        examples = [as_example(e) for e in examples]
        random.Random(self.seed).shuffle(examples)
        n_val = min(self.data.val_size, len(examples) // 10 or 1)
        train, val = examples[n_val:], examples[:n_val]
        if not train:
            raise DataError(f"{name}: {len(examples)} rows leave nothing to train on after validation")
        if self.mode == "pack":
            self.train_rows = pack_texts(train, self.tokenizer, self.data.max_length)
            self.val_rows = pack_texts(val, self.tokenizer, self.data.max_length)
            self.val_prompts = [" ".join(e.completion.split()[:3]) for e in val]
        else:
            self.train_rows = tokenize_pairs(train, self.tokenizer, self.data, name)
            self.val_rows = tokenize_pairs(val, self.tokenizer, self.data, name)
            self.val_prompts = [e.prompt for e in val]
        log.info("%s: %d train and %d validation sequences", name, len(self.train_rows), len(self.val_rows))

    def _loader(self, rows: list[dict], shuffle: bool) -> DataLoader:
        return DataLoader(
            Rows(rows),
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=shuffle and len(rows) >= self.batch_size,
            num_workers=self.data.num_workers,
            collate_fn=partial(collate, pad_token_id=self.tokenizer.pad_token_id),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_rows, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_rows, shuffle=False)
