"""The configuration of `postrl prm` (process reward model training, trainers/prm.py)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from postrl.config import (CheckpointSection, LoggingSection, ModelSection, NonFiniteLimit, OptimizerFields,
                           RunConfig, Section, _check_scalar_model)


class PrmColumns(Section):
    """Column names of stepwise-supervision data (TRL's by default)."""

    prompt: str = "prompt"
    """A string, or chat messages."""
    completions: str = "completions"
    """The steps: a list of strings."""
    labels: str = "labels"
    """One bool per step: true while the solution is still correct."""


class PrmData(Section):
    """Step-labelled rows: `task:arithmetic_steps`, a .jsonl/.json/.parquet/.csv file, a `datasets`
    directory or a hub dataset, in TRL's stepwise-supervision format."""

    source: str = "task:arithmetic_steps"
    task_kwargs: dict[str, Any] = {}
    """Arguments of a built-in task (e.g. `{steps: 4}`)."""
    subset: str | None = None
    split: str = "train"
    eval_source: str | None = None
    """Held-out data; default `source` with `eval_split` (a single file: `eval.holdout_fraction` of it)."""
    eval_split: str = "test"
    limit: int | None = Field(None, ge=1)
    """Use only the first `limit` training rows."""
    columns: PrmColumns = PrmColumns()
    separator: str = "\n"
    """Put after every step's tokens; the label sits on its last token. In use, a completion is cut
    into steps at this string (saved with the model)."""
    chat_template: Literal["auto", "always", "never"] = "auto"
    """How prompts are rendered, as in `postrl train` (`data.chat_template`)."""
    system_prompt: str | None = None
    long_rows: Literal["error", "skip"] = "error"
    """A row longer than train.max_length tokens: stop with an error, or drop it (counted)."""

    @model_validator(mode="after")
    def _separator(self):
        if not self.separator:
            raise ValueError("data.separator must be a non-empty string (e.g. '\\n'); steps are joined by it")
        return self


class PrmTrain(OptimizerFields, NonFiniteLimit):
    lr: float = Field(1e-5, gt=0)
    """For a pretrained backbone; a from-scratch tiny model wants ~1e-3."""
    batch_size: int = Field(32, ge=1)
    """Rows (solutions) per optimizer step; the loss is the mean over their labelled steps."""
    micro_batch_size: int = Field(16, ge=1)
    bf16: bool | None = None
    """bf16 autocast; None: on for CUDA devices that support it, off on CPU."""
    steps: int | None = Field(None, ge=1)
    """Optimizer steps; None: `epochs` passes over the training rows."""
    epochs: int = Field(1, ge=1)
    max_length: int = Field(1024, ge=2)
    """Most tokens of prompt + steps + separators; longer rows follow data.long_rows."""


class PrmEval(Section):
    every: int = Field(0, ge=0)
    """Held-out step and first-error accuracy every this many steps (0: only at the end)."""
    limit: int | None = Field(500, ge=1)
    """Held-out rows (None: all)."""
    holdout_fraction: float = Field(0.05, gt=0, lt=1)
    """When the data has no held-out split, this fraction of its rows (chosen by `seed`) is held out."""
    threshold: float = Field(0.5, gt=0, lt=1)
    """A step is predicted correct when its score (probability) is >= this."""


class PrmConfig(RunConfig):
    """`postrl prm`: a process reward model trained on step labels (trainers/prm.py)."""

    name: str = "prm"
    model: ModelSection = ModelSection()
    """The backbone (a causal LM: hub id, directory, or `tiny`); a one-output token head reads each step's end."""
    data: PrmData = PrmData()
    train: PrmTrain = PrmTrain()
    eval: PrmEval = PrmEval()
    checkpoint: CheckpointSection = CheckpointSection(every=100)
    logging: LoggingSection = LoggingSection(console_every=10)

    @model_validator(mode="after")
    def _check_prm(self):
        _check_scalar_model(self.model, "postrl prm", "process reward model")
        return self
