"""Hostile programs for the sandbox tests, and a reward that runs them (loaded by file path in a run).

Each program "passes" (runs to the end) only if its attack worked, so a contained attack scores 0
with `code_tests` (binary). `$name` placeholders are filled by `program(name, **values)`:
target (a path outside the sandbox to create), secret_name / secret_value (a variable in the
trainer's environment), project_file (a file of this repository), port (a listening localhost
port of the test).
"""

from __future__ import annotations

from pathlib import Path
from string import Template

PROJECT_FILE = str(Path(__file__).resolve().parents[2] / "pyproject.toml")

HOSTILE = {
    "infinite_loop": "while True:\n    pass\n",
    "fork_bomb": "import os\nwhile True:\n    os.fork()\n",
    "shell_fork_bomb": "import subprocess\nsubprocess.Popen(['/bin/sh', '-c', ':(){ :|:& };:'])\n",
    "multiprocessing_bomb": "import multiprocessing\nwhile True:\n    multiprocessing.Process(target=print).start()\n",
    "memory_bomb": "blocks = []\nwhile True:\n    blocks.append(bytearray(10 ** 8))\n",
    "write_outside": "open($target, 'w').write('pwned')\n",
    "env_secret": "import os\nassert os.environ.get($secret_name) == $secret_value\n",
    "env_secret_of_parent": ("import os\ndata = open('/proc/%d/environ' % os.getppid(), 'rb').read()\nprint(data)\n"
                             "assert $secret_value.encode() in data\n"),
    "read_project_file": "text = open($project_file).read()\nassert 'postrl' in text\nprint(text)\n",
    "list_project_dir": "import os\nassert 'pyproject.toml' in os.listdir(os.path.dirname($project_file))\n",
    "socket": "import socket\ns = socket.create_connection(('127.0.0.1', $port), timeout=2)\ns.sendall(b'leak')\n",
    "huge_output": "while True:\n    print('x' * 10 ** 6)\n",
    "kill_parent": "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n",
    "killpg_parent": "import os, signal\nos.killpg(os.getpgid(os.getppid()), signal.SIGKILL)\n",
    "kill_everything": "import os, signal\nos.kill(-1, signal.SIGKILL)\n",
    "disk_filler": "i = 0\nwhile True:\n    open('f%d' % i, 'wb').write(b'x' * (1 << 20))\n    i += 1\n",
}
"""name -> program template. disk_filler is contained only at isolation level "full" (a size-limited
tmpfs): elsewhere it writes to the host's temp disk until its timeout (each file <= max_file_mb)."""


def program(name: str, *, target: str = "/tmp/postrl-hostile-target", secret_name: str = "POSTRL_FAKE_SECRET",
            secret_value: str = "hunter2-not-a-real-key", project_file: str = PROJECT_FILE, port: int = 9) -> str:
    """The program `name` with its placeholders filled (strings as Python literals)."""
    values = {"target": repr(target), "secret_name": repr(secret_name), "secret_value": repr(secret_value),
              "project_file": repr(project_file), "port": str(int(port))}
    return Template(HOSTILE[name]).substitute(values)


def hostile_code_reward(prompts, completions, *, names: list[str], timeout_s: float = 1.0,
                        target: str = "/tmp/postrl-hostile-target", **kwargs) -> list[float]:
    """Ignore the model's completions: score hostile program `names[i % len(names)]` for completion
    i with `code_tests` (binary). Every score is 0.0 when every attack is contained."""
    from postrl.rewards.code_exec import code_tests

    hostile = [f"```python\n{program(names[i % len(names)], target=target)}```" for i in range(len(completions))]
    return code_tests(prompts, hostile, ["assert True"] * len(completions), timeout_s=timeout_s)
