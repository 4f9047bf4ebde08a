"""The README's Python examples run as written, and its links work on a package index too.

Each ```python block of README.md runs on its own, in a fresh interpreter, in an empty temporary directory
(so the default SQLite file lands there), with SESSION_SECRET set and DATABASE_URL unset (so examples that
read it fall back to SQLite). The block runs as a module named `readme_snippet`, not `__main__`, so an
`if __name__ == "__main__": app.run()` at its end is not reached and no server is started. If the block
leaves a WSGI callable named `app`, a GET of `/` must not answer with a 5xx.

A block that can't run on its own is marked with `<!-- not-run: reason -->` on the line before its fence.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
NOT_RUN = re.compile(r"<!--\s*not-run:\s*(.+?)\s*-->")

RUNNER = r"""
import io, runpy, sys, wsgiref.util
namespace = runpy.run_path(sys.argv[1], run_name="readme_snippet")
app = namespace.get("app")
if callable(app):
    environ = {}
    wsgiref.util.setup_testing_defaults(environ)
    environ["wsgi.errors"] = io.StringIO()
    answer = {}
    def start_response(status, headers, exc_info=None):
        answer["status"] = status
    body = b"".join(app(environ, start_response))
    status = int(answer["status"].split()[0])
    print("GET / ->", answer["status"], body[:80])
    if status >= 500:
        sys.exit("GET / answered %s: %s" % (answer["status"], environ["wsgi.errors"].getvalue()))
"""


def python_blocks():
    """(line number, code, not-run reason or None) for each ```python block of the README."""
    lines = README.read_text(encoding="utf-8").splitlines()
    blocks, index = [], 0
    while index < len(lines):
        if lines[index].strip() == "```python":
            start = index + 1
            end = start
            while lines[end].strip() != "```":
                end += 1
            previous = next((line for line in reversed(lines[:index]) if line.strip()), "")
            marked = NOT_RUN.search(previous)
            blocks.append((start, "\n".join(lines[start:end]) + "\n", marked.group(1) if marked else None))
            index = end
        index += 1
    return blocks


BLOCKS = python_blocks()


def test_the_readme_has_python_examples_and_few_are_not_run():
    assert len(BLOCKS) >= 4
    assert sum(reason is not None for _, _, reason in BLOCKS) <= 2, "keep not-run blocks rare"


@pytest.mark.parametrize("line, code, reason", BLOCKS, ids=["README.md:%d" % line for line, _, _ in BLOCKS])
def test_a_readme_example_runs(tmp_path, line, code, reason):
    if reason is not None:
        pytest.skip("marked not-run in the README: %s" % reason)
    snippet = tmp_path / "snippet.py"
    snippet.write_text(code, encoding="utf-8")
    env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    env["SESSION_SECRET"] = "readme test secret"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    result = subprocess.run(
        [sys.executable, "-c", RUNNER, str(snippet)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, "README.md line %d:\n%s\n%s" % (line, result.stdout, result.stderr)


def test_the_readme_links_are_absolute():
    """A package index shows the README outside the repository: relative links would be broken there."""
    text = README.read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    assert targets
    relative = [t for t in targets if not t.startswith(("https://", "http://", "#", "mailto:"))]
    assert not relative, relative
