"""docs/algorithms.md is generated from the registries and must not go stale."""

from pathlib import Path

from postrl.algorithms.docs import registries, render

DOC = Path(__file__).resolve().parents[1] / "docs" / "algorithms.md"


def test_algorithms_doc_is_up_to_date():
    assert DOC.read_text() == render(), "docs/algorithms.md is stale: run `make docs`"


def test_every_entry_has_a_paper_summary_and_formula():
    for kind, reg in registries().items():
        for e in reg:
            assert e.paper and e.summary, (kind, e.name)
            if kind in ("advantage estimators", "policy losses"):
                assert e.formula, f"{kind} {e.name} has no formula in its docstring"
