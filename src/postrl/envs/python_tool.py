"""The built-in `python` tool (code run in the execution sandbox) and the `python` environment.

The tool runs the model's code with `postrl.rewards.sandbox.run_python` (separate process,
resource limits, no network, killed at its timeout) and returns what it printed, or the error
and the last line of the traceback. The environment poses the same problems as `calculator`
(`task:calculator_problems`), to be solved by printing the result.
"""

from __future__ import annotations

from postrl.envs.base import ENVS
from postrl.envs.calculator import _score_number
from postrl.envs.tool_env import ToolEnv
from postrl.envs.tools import TOOLS

SANDBOX_TIMEOUT_S = 5.0


@TOOLS.register("python", timeout_s=SANDBOX_TIMEOUT_S + 5.0)
def python(code: str) -> str:
    """Run a Python program in a sandbox and return what it prints (use print for the result).

    Args:
        code: the program, e.g. "print(482*37)".
    """
    from postrl.rewards.sandbox import run_python

    result = run_python(code, timeout_s=SANDBOX_TIMEOUT_S, memory_mb=256, max_output_bytes=4096)
    if result.status == "passed":
        return result.stdout.strip() or "(no output: print the result)"
    last = result.stderr.strip().splitlines()[-1:] or [""]
    return f"error: {result.reason}" + (f": {last[0]}" if last[0] else "")


@ENVS.register("python", paper="ToRL: Scaling Tool-Integrated RL", arxiv="2503.23383",
               summary="arithmetic solved by running code with a sandboxed python(code) tool")
class PythonEnv(ToolEnv):
    """Answer `task:calculator_problems` with a `python` tool that runs code in the sandbox.

    reward = 1 if the last number of the final answer equals the row's `answer`, else 0; tool
    turns earn 0. As in ToRL (and ReTool, arXiv 2504.11536), code runs in a sandbox and its
    output (or error) comes back as the next observation; only the outcome is rewarded.
    """

    tools = ["python"]
    max_turns = 4

    def score(self, answer: str) -> tuple[float, bool]:
        return _score_number(answer, self.row)

    def expert_call(self, row) -> str:
        """The demonstration call for `row` (task:tool_trajectories), in the plain format."""
        return f'<call>python("print({row.columns["expression"]})")</call>'
