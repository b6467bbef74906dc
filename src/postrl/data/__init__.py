"""Data: built-in tasks, dataset loading and validation, prompt rendering and tokenisation.

    records -> load_prompt_dataset / load_sft_dataset (columns mapped, every row checked)
            -> render_prompt / encode_prompts / encode_sft (token ids the trainer keeps)

`tasks.py` owns the synthetic tasks (the `TASKS` registry), `loading.py` sources, column
mapping and `DataError`s, `chat.py` chat templates and tokenisation; `preference.py` loads
paired/unpaired/ranked preference rows and `preference_tasks.py` builds synthetic ones. Any TRL dataset format loads
unchanged; every problem is a `DataError` naming the file, the 1-based row, the column and the fix.
"""

from postrl.data.chat import encode_prompts, encode_sft, render_prompt
from postrl.data.loading import (
    DataError,
    PromptDataset,
    PromptRow,
    SFTRow,
    load_prompt_dataset,
    load_records,
    load_sft_dataset,
)
from postrl.data.tasks import TASKS, arithmetic, countdown
from postrl.data import preference_tasks  # noqa: F401  (registers the arithmetic_* preference tasks)
from postrl.data import code_tasks, prlcoder  # noqa: F401  (task:python_functions, task:code_line_labels)
from postrl.data import step_tasks  # noqa: F401  (registers arithmetic_steps, step-labelled data)
from postrl.data import tool_tasks  # noqa: F401  (task:calculator_problems, task:tool_trajectories)
from postrl.data import agent_tasks  # noqa: F401  (gridworld, search_qa and their _sft warm starts)
from postrl.data import length_tasks  # noqa: F401  (task:arithmetic_verbose, answers of three lengths)
from postrl.data.preference import PreferenceRow, load_preference_rows

__all__ = [
    "TASKS", "arithmetic", "countdown",
    "DataError", "PromptRow", "PromptDataset", "SFTRow",
    "load_records", "load_prompt_dataset", "load_sft_dataset",
    "render_prompt", "encode_prompts", "encode_sft",
    "PreferenceRow", "load_preference_rows",
]
