"""The package: installs with pip, imports without bottle, keeps its version in one place."""

import subprocess
import sys
from pathlib import Path

import peewee_sessions

ROOT = Path(__file__).resolve().parent.parent


def run_python(code, **kwargs):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, **kwargs)


def test_the_store_works_without_bottle(tmp_path):
    code = (
        "import sys; sys.modules['bottle'] = None\n"  # makes `import bottle` fail
        "import peewee_sessions\n"
        "with peewee_sessions.PeeweeSessionStore(clear_interval=0) as store:\n"
        "    store.set('a', {'n': 1}); print(store.get('a'))\n"
    )
    result = run_python(code, cwd=tmp_path, env={"PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "{'n': 1}"
    assert (tmp_path / "peewee_sessions.sqlite").exists()  # the default: SQLite in the working directory


def test_importing_does_not_load_bottle():
    code = "import sys, peewee_sessions; print('bottle' in sys.modules)"
    result = run_python(code, cwd=ROOT)
    assert result.stdout.strip() == "False", result.stderr  # peewee itself imports the drivers it finds


def test_pip_install_puts_the_one_module_in_place(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
         "--target", str(tmp_path / "site"), str(ROOT)],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    installed = run_python("import peewee_sessions; print(peewee_sessions.__file__, peewee_sessions.__version__)",
                           cwd=tmp_path, env={"PYTHONPATH": str(tmp_path / "site")})
    path, version = installed.stdout.split()
    assert path.startswith(str(tmp_path / "site")) and version == peewee_sessions.__version__
