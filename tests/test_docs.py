"""docs/algorithms.md is generated from the registries and must not go stale."""

from pathlib import Path

from postrl.algorithms.docs import registries, render, render_preference

DOC = Path(__file__).resolve().parents[1] / "docs" / "algorithms.md"
PREFERENCE_DOC = DOC.parent / "preference.md"


def test_algorithms_doc_is_up_to_date():
    assert DOC.read_text() == render(), "docs/algorithms.md is stale: run `make docs`"


def test_every_entry_has_a_paper_summary_and_formula():
    for kind, reg in registries().items():
        for e in reg:
            assert e.paper and e.summary, (kind, e.name)
            if kind in ("advantage estimators", "policy losses"):
                assert e.formula, f"{kind} {e.name} has no formula in its docstring"


def test_preference_doc_is_up_to_date():
    assert PREFERENCE_DOC.read_text() == render_preference(), "docs/preference.md is stale: run `make docs`"


def test_preference_doc_lists_every_preference_loss_with_its_paper():
    from postrl.algorithms import PREFERENCE_LOSSES

    text = PREFERENCE_DOC.read_text()
    for e in PREFERENCE_LOSSES:
        assert f"### `{e.name}`" in text and e.paper in text, e.name
    assert "## Data formats" in text  # the hand-written guide is included
