"""Generates `docs/algorithms.md` and `postrl algos` from the registries (never by hand).

`python -m postrl.algorithms.docs > docs/algorithms.md`; a test fails when the file is stale.
"""

from __future__ import annotations

from pathlib import Path

# written by `python -m benchmarks.compare_algorithms --write-docs`; included when present
MEASURED = Path(__file__).resolve().parents[3] / "docs" / "compare_algorithms.md"


def registries():
    from postrl.algorithms import ADVANTAGES, POLICY_LOSSES, PRESETS
    from postrl.rewards import REWARDS
    from postrl.rollout import ENGINES
    from postrl.samplers import SAMPLERS

    return {"advantage estimators": ADVANTAGES, "policy losses": POLICY_LOSSES, "samplers": SAMPLERS,
            "rewards": REWARDS, "rollout engines": ENGINES, "presets": PRESETS}


def catalog() -> dict[str, list[dict]]:
    out = {}
    for kind, reg in registries().items():
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
            paper = e.paper + (f" — arXiv [{e.arxiv}](https://arxiv.org/abs/{e.arxiv})" if e.arxiv else "")
            lines += [f"### `{e.name}`", "", f"{e.summary}.", "", f"*Paper:* {paper}", ""]
            presets = used_by.get((kind, e.name))
            if presets:
                lines += [f"*Presets:* {', '.join(f'`{p}`' for p in presets)}", ""]
            if e.needs:
                lines += [f"*Needs:* {', '.join(f'`{n}`' for n in e.needs)}", ""]
            if kind == "presets":
                lines += ["```yaml"] + [f"{k}: {v}" for k, v in e.fn().items()] + ["```", ""]
                continue
            if e.defaults:
                params = ", ".join(f"`{k}={_plain(v)!r}`" if isinstance(v, str) else f"`{k}={_plain(v)}`"
                                   for k, v in e.defaults.items())
                lines += [f"*Parameters:* {params}", ""]
            if e.formula:
                lines += ["```", e.formula, "```", ""]
    if MEASURED.exists():
        lines += ["## Measured on the demo task", "",
                  "Every preset trained the same way from the same start "
                  "(`benchmarks/compare_algorithms.py`; curves in `docs/compare_algorithms.png`).", "",
                  MEASURED.read_text().strip(), ""]
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    print(render(), end="")
