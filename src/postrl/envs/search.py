"""Built-in `search` env: answer questions about invented people by searching a local corpus.

The corpus is generated in code (fixed seed), one passage per invented person:

    "Zorvak was born in Tessimor and works as a pilot. Zorvak's mentor is Belun."

so no model can know an answer without searching. The `search(query)` tool returns the top
`TOP_K` passages of the corpus by BM25 (`envs/bm25.py`), one per line. Questions need one hop
("Where was Zorvak born?", "What does Zorvak do?") or two ("Where was Zorvak's mentor born?":
search Zorvak, read the mentor, search the mentor). The episode ends at the first turn without a
tool call: that text is the answer, and reward = success = exact match after SQuAD-style
normalisation (lower case, no punctuation or articles), as in Search-R1 ("Search-R1: Training
LLMs to Reason and Leverage Search Engines with Reinforcement Learning", arXiv 2503.09516).
Search-R1 retrieves from a Wikipedia index with an E5 retriever; this local BM25 corpus plays the
simulated search engine of SSRL ("SSRL: Self-Search Reinforcement Learning", arXiv 2508.10874):
cheap, deterministic and offline. `task:search_qa` serves the questions, `task:search_qa_sft`
noisy-expert episodes (postrl.data.agent_tasks).
"""

from __future__ import annotations

import functools
import random
import re
import string
from dataclasses import dataclass

from postrl.envs.base import ENVS
from postrl.envs.bm25 import BM25
from postrl.envs.tool_env import ToolEnv
from postrl.envs.tools import TOOLS

TOP_K = 2
"""Passages per search (Search-R1 uses 3 Wikipedia passages; 2 short ones keep episodes short)."""
NUM_PEOPLE = 400
JOBS = ("baker", "pilot", "farmer", "doctor", "painter", "sailor", "miner", "tailor", "singer", "judge",
        "hunter", "potter", "weaver", "smith", "cook", "nurse")
_CONSONANTS, _VOWELS = "bdfgklmnprstvz", "aeiou"


@dataclass(frozen=True)
class Person:
    name: str
    city: str
    job: str
    mentor: str

    def passage(self) -> str:
        return (f"{self.name} was born in {self.city} and works as a {self.job}. "
                f"{self.name}'s mentor is {self.mentor}.")


def _invented_names(rng: random.Random, count: int, syllables: int, taken: set[str]) -> list[str]:
    out: list[str] = []
    while len(out) < count:
        name = "".join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS) for _ in range(syllables))
        name = (name + rng.choice(_CONSONANTS)).capitalize()
        if name not in taken:
            taken.add(name)
            out.append(name)
    return out


@functools.lru_cache(maxsize=1)
def people() -> tuple[Person, ...]:
    """The built-in corpus's people (fixed seed: every run and every process builds the same)."""
    rng = random.Random("postrl-search-corpus")
    taken: set[str] = set()
    names = _invented_names(rng, NUM_PEOPLE, 2, taken)
    cities = _invented_names(rng, 40, 3, taken)
    out = []
    for i, name in enumerate(names):
        mentor = names[(i + rng.randrange(1, NUM_PEOPLE)) % NUM_PEOPLE]  # never oneself
        out.append(Person(name, rng.choice(cities), rng.choice(JOBS), mentor))
    return tuple(out)


@functools.lru_cache(maxsize=1)
def index() -> tuple[BM25, tuple[str, ...]]:
    passages = tuple(p.passage() for p in people())
    return BM25(passages), passages


@TOOLS.register("search")
def search(query: str) -> str:
    """Search the local corpus; returns the best-matching passages, one per line.

    Args:
        query: words to look for, e.g. a person's name.
    """
    bm25, passages = index()
    hits = bm25.top_k(query, TOP_K)
    return "\n".join(passages[i] for i, _ in hits) if hits else "no results"


def questions() -> list[dict]:
    """Every question about the corpus: {question, answer, person, attribute, hops}."""
    by_name = {p.name: p for p in people()}
    out = []
    for p in people():
        out.append({"question": f"Where was {p.name} born?", "answer": p.city, "person": p.name,
                    "attribute": "city", "hops": 1})
        out.append({"question": f"What does {p.name} do?", "answer": p.job, "person": p.name,
                    "attribute": "job", "hops": 1})
        out.append({"question": f"Where was {p.name}'s mentor born?", "answer": by_name[p.mentor].city,
                    "person": p.name, "attribute": "mentor_city", "hops": 2})
    return out


def expert_calls(person: str, attribute: str) -> list[str]:
    """The searches an expert makes for a question, in the plain call format."""
    calls = [f'<call>search("{person}")</call>']
    if attribute == "mentor_city":
        mentor = next(p.mentor for p in people() if p.name == person)
        calls.append(f'<call>search("{mentor}")</call>')
    return calls


_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """SQuAD / Search-R1 normalisation: lower case, drop punctuation and articles, squeeze spaces."""
    text = "".join(ch for ch in text.lower() if ch not in string.punctuation)
    return " ".join(_ARTICLES.sub(" ", text).split())


@ENVS.register("search", paper="Search-R1: Training LLMs to Reason and Leverage Search Engines with "
               "Reinforcement Learning", arxiv="2503.09516",
               summary="questions about invented people answered by calling search(query) over a local "
                       "BM25 corpus; exact-match reward")
class SearchEnv(ToolEnv):
    """Questions of `task:search_qa` (the row's `answer` column is the reference).

    reward = success = 1 if the final answer (the first turn without a tool call) equals the
    reference after `normalize_answer`, else 0; search turns earn 0. `max_turns` = 4 leaves room
    for a two-hop question (two searches, then the answer) and one retry.
    """

    tools = ["search"]
    max_turns = 4

    def score(self, answer: str) -> tuple[float, bool]:
        if self.row is None or getattr(self.row, "answer", None) is None:
            raise ValueError("search env: the dataset row has no answer; use data.source: task:search_qa "
                             "or a dataset with an answer column")
        ok = normalize_answer(answer) == normalize_answer(str(self.row.answer))
        return float(ok), ok
