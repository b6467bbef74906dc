"""The built-in `calculator` tool (safe arithmetic, no `eval`) and the `calculator` environment.

The tool parses the expression with `ast` and evaluates only numbers, + - * / // % ** and
parentheses, with bounds (expression length, exponent size, result size) so that no call can
hang or exhaust memory. The environment poses `task:calculator_problems` (3-digit x 2-digit
products, multi-operand sums): too hard for a tiny model to do in its head, easy with the tool.
"""

from __future__ import annotations

import ast
import math
import operator

from postrl.envs.base import ENVS
from postrl.envs.tool_env import ToolEnv, last_number
from postrl.envs.tools import TOOLS

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
MAX_EXPRESSION_CHARS = 200
MAX_RESULT_DIGITS = 100


def evaluate(expression: str) -> int | float:
    """The value of an arithmetic expression; ValueError (with a readable message) for anything else."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ValueError(f"the expression is longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression.replace("^", "**").strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError) as e:
        raise ValueError(f"cannot parse {expression!r} as arithmetic") from e
    return _value(tree.body)


def _value(node: ast.AST) -> int | float:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_value(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        left, right = _value(node.left), _value(node.right)
        if isinstance(node.op, ast.Pow):
            # |left|**right has about right*log10|left| digits: refuse before computing it.
            if abs(right) > 1000 or (abs(left) > 1 and right * math.log10(abs(left)) > MAX_RESULT_DIGITS):
                raise ValueError("the power is too large")
        try:
            result = _OPS[type(node.op)](left, right)
        except ZeroDivisionError:
            raise ValueError("division by zero") from None
        if isinstance(result, complex):
            raise ValueError("the result is not a real number")
        if isinstance(result, int) and result.bit_length() > MAX_RESULT_DIGITS * 3.33:
            raise ValueError("the result is too large")
        return result
    raise ValueError("only numbers, + - * / // % ** and parentheses are allowed")


def format_number(value: int | float) -> str:
    """Integers as integers (24.0 -> "24"), other floats with up to 10 significant digits."""
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise ValueError("the result is not a finite number")
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.10g}"
    return str(value)


@TOOLS.register("calculator")
def calculator(expression: str) -> str:
    """Evaluate arithmetic: numbers, + - * / // % ** and parentheses.

    Args:
        expression: the expression, e.g. "482*37" or "(12+7)*3".
    """
    return format_number(evaluate(expression))


@ENVS.register("calculator", paper="Toolformer: Language Models Can Teach Themselves to Use Tools",
               arxiv="2302.04761",
               summary="arithmetic a tiny model cannot do in its head, solved by calling calculator(expression)")
class CalculatorEnv(ToolEnv):
    """Answer `task:calculator_problems` (e.g. "What is 482*37?") with a `calculator` tool.

    reward = 1 if the last number of the final answer equals the row's `answer`, else 0
    (success likewise); tool turns earn 0. Toolformer's calculator API, as an RL environment
    in the style of ReTool / ToRL (outcome reward only, tool results fed back as observations).
    """

    tools = ["calculator"]
    max_turns = 4

    def score(self, answer: str) -> tuple[float, bool]:
        return _score_number(answer, self.row)

    def expert_call(self, row) -> str:
        """The demonstration call for `row` (task:tool_trajectories), in the plain format."""
        return f'<call>calculator("{row.columns["expression"]}")</call>'


def _score_number(answer: str, row) -> tuple[float, bool]:
    got = last_number(answer)
    target = float(row.answer)
    ok = got is not None and math.isclose(got, target, rel_tol=0, abs_tol=1e-6)
    return float(ok), ok
