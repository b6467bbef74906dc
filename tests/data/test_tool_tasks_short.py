"""task:calculator_problems kind short_product (2-digit x 2-digit, 4-digit value) and its demonstrations."""

from __future__ import annotations

from postrl.data.tool_tasks import calculator_problems, tool_trajectories


def test_short_product_problems():
    train = calculator_problems("train", kinds=["short_product"])
    test = calculator_problems("test", kinds=["short_product"])
    # a, b in 10..99 with a*b >= 1000: 6,610 problems (5,960 train + 650 test with the default hash split)
    expected = sum(1 for a in range(10, 100) for b in range(10, 100) if a * b >= 1000)
    assert len(train) + len(test) == expected == 6610
    assert not {r["prompt"][0]["content"] for r in train} & {r["prompt"][0]["content"] for r in test}
    for r in train[:50] + test[:50]:
        a, b = r["expression"].split("*")
        assert len(a) == len(b) == 2 and r["answer"] == str(int(a) * int(b)) and len(r["answer"]) == 4
        assert r["prompt"][0]["content"] == f"What is {r['expression']}?" and r["kind"] == "short_product"
    # the default kinds are unchanged (short_product only when named)
    assert {r["kind"] for r in calculator_problems("test", limit=300)} <= {"product", "sum"}


def test_short_product_demonstrations_copy_at_fixed_offsets():
    rows = tool_trajectories("train", kinds=["short_product"], tool_use_rate=1.0, describe_tools=False, limit=3)
    assert [r["turn"] for r in rows] == [0, 1] * 3
    for call, answer in zip(rows[0::2], rows[1::2]):
        expr = call["prompt"][-1]["content"][len("What is "):-1]
        assert call["completion"] == f'<call>calculator("{expr}")</call>'
        a, b = expr.split("*")
        assert answer["completion"] == str(int(a) * int(b)) == answer["prompt"][-1]["content"]
