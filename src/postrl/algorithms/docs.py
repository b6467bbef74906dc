"""Generates `docs/algorithms.md` and `postrl algos` from the registries (never by hand).

`python -m postrl.algorithms.docs > docs/algorithms.md` and
`python -m postrl.algorithms.docs --preference > docs/preference.md`; a test fails when either is stale.
"""

from __future__ import annotations

from pathlib import Path

# written by `python -m benchmarks.compare_algorithms --write-docs`; included when present
MEASURED = Path(__file__).resolve().parents[3] / "docs" / "compare_algorithms.md"


def registries():
    from postrl.algorithms import ADVANTAGES, POLICY_LOSSES, PRESETS
    from postrl.rewards import COMBINERS, PROCESS_REWARDS, REWARDS
    from postrl.rewards.length import LENGTH_SHAPERS
    from postrl.rollout import ENGINES
    from postrl.rollout.history import HISTORIES
    from postrl.samplers import SAMPLERS
    from postrl.trainers.online_pairs import PAIR_RULES

    return {"advantage estimators": ADVANTAGES, "policy losses": POLICY_LOSSES, "samplers": SAMPLERS,
            "rewards": REWARDS, "process rewards": PROCESS_REWARDS, "reward combiners": COMBINERS,
            "length shapers (length.name)": LENGTH_SHAPERS,
            "rollout engines": ENGINES, "history policies (env.history)": HISTORIES, "presets": PRESETS,
            "pair rules (postrl online)": PAIR_RULES}


def catalog() -> dict[str, list[dict]]:
    """What `postrl algos` lists: the registries of docs/algorithms.md and the preference losses."""
    from postrl.algorithms import PREFERENCE_LOSSES

    out = {}
    for kind, reg in {**registries(), "preference losses": PREFERENCE_LOSSES}.items():
        out[kind] = [{"name": e.name, "summary": e.summary, "paper": e.paper, "arxiv": e.arxiv,
                      "parameters": {k: _plain(v) for k, v in e.defaults.items()},
                      **({"settings": e.fn()} if kind == "presets" else {})} for e in reg]
    return out


def _presets_using() -> dict[tuple[str, str], list[str]]:
    """(registry kind, entry name) -> the presets that choose it."""
    from postrl.algorithms import PRESETS

    keys = {"algorithm.advantage": "advantage estimators", "algorithm.loss": "policy losses",
            "sampler.name": "samplers"}
    out: dict[tuple[str, str], list[str]] = {}
    for preset in PRESETS:
        for key, value in preset.fn().items():
            if key in keys:
                out.setdefault((keys[key], value), []).append(preset.name)
    return out


def _plain(v):
    return v if isinstance(v, (int, float, str, bool, type(None))) else repr(v)


def render() -> str:
    lines = ["# Algorithms", "",
             "Generated from the registries by `python -m postrl.algorithms.docs` (`make docs`); "
             "do not edit by hand. `postrl algos` prints the same list.", ""]
    used_by = _presets_using()
    for kind, reg in registries().items():
        lines += [f"## {kind.capitalize()}", ""]
        for e in reg:
            lines += _entry(e, kind, used_by.get((kind, e.name)))
    if MEASURED.exists():
        lines += ["## Measured on the demo task", "",
                  "Every preset trained the same way from the same start "
                  "(`benchmarks/compare_algorithms.py`; curves in `docs/compare_algorithms.png`).", "",
                  MEASURED.read_text().strip(), ""]
    return "\n".join(lines).rstrip() + "\n"


def _entry(e, kind: str, presets: list[str] | None = None, extra: list[str] = ()) -> list[str]:
    """The markdown of one registry entry: summary, paper, presets, needs, parameters, formula."""
    paper = e.paper + (f" — arXiv [{e.arxiv}](https://arxiv.org/abs/{e.arxiv})" if e.arxiv else "")
    lines = [f"### `{e.name}`", "", f"{e.summary}.", "", f"*Paper:* {paper}", ""]
    if presets:
        lines += [f"*Presets:* {', '.join(f'`{p}`' for p in presets)}", ""]
    if e.needs:
        lines += [f"*Needs:* {', '.join(f'`{n}`' for n in e.needs)}", ""]
    lines += list(extra)
    if kind == "presets":
        return lines + ["```yaml"] + [f"{k}: {v}" for k, v in e.fn().items()] + ["```", ""]
    if e.defaults:
        params = ", ".join(f"`{k}={_plain(v)!r}`" if isinstance(v, str) else f"`{k}={_plain(v)}`"
                           for k, v in e.defaults.items())
        lines += [f"*Parameters:* {params}", ""]
    if e.formula:
        lines += ["```", e.formula, "```", ""]
    return lines


# ------------------------------------------------------------------------- docs/preference.md
PREFERENCE_GUIDE = Path(__file__).resolve().parents[3] / "docs" / "preference_guide.md"
"""Hand-written prose (data formats, config, commands) appended to the generated loss list."""


def render_preference() -> str:
    """docs/preference.md: every preference loss from the registry, the data formats each trains
    on (found by calling it, `trainers/pref_data.accepted_kinds`), then docs/preference_guide.md."""
    from postrl.algorithms import PREFERENCE_LOSSES
    from postrl.trainers.pref_data import KINDS, SUPPORTED_NEEDS, accepted_kinds

    def data(e) -> str:
        ok = accepted_kinds(e.name)
        kinds = [k for k in KINDS if ok[k] is None]
        if "unpaired" in kinds and "paired" not in kinds:
            kinds.append("paired (split)")
        return ", ".join(kinds) or "—"

    def offline(e) -> str:
        return "yes" if all(n in SUPPORTED_NEEDS for n in e.needs) else "no (needs " + ", ".join(
            n for n in e.needs if n not in SUPPORTED_NEEDS) + ")"

    lines = ["# Preference optimisation", "",
             "The loss list is generated from the `PREFERENCE_LOSSES` registry and the rest is "
             "`docs/preference_guide.md`, by `python -m postrl.algorithms.docs --preference` (`make docs`); "
             "do not edit by hand.", "",
             "## Losses", "",
             "*Data*: the formats a loss trains on (paired (split): pairs become a desirable and an "
             "undesirable example). *Reference*: a reference model's log-probs are computed once before "
             "training; reference-free losses load no reference model. *`postrl pref`*: whether the "
             "offline trainer provides everything the loss needs.", "",
             "| loss | data | reference | `postrl pref` | summary |", "| --- | --- | --- | --- | --- |"]
    for e in PREFERENCE_LOSSES:
        ref = "yes" if "reference" in e.needs else "no"
        lines.append(f"| [`{e.name}`](#{e.name}) | {data(e)} | {ref} | {offline(e)} | {e.summary} |")
    lines.append("")
    for e in PREFERENCE_LOSSES:
        lines += _entry(e, "preference losses", extra=[f"*Data:* {data(e)}", ""])
    lines += [PREFERENCE_GUIDE.read_text(encoding="utf-8").strip(), ""]
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    import sys

    print(render_preference() if "--preference" in sys.argv[1:] else render(), end="")
