"""The README's two set-up commands are the ones users and CI run."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands():
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(.+?)\n```", text)[:2]


def test_readme_opens_with_two_setup_commands():
    install_run, install_test = readme_commands()
    assert install_run.rstrip().endswith("jaxschools run")
    assert install_test.rstrip().endswith("pytest")


def test_ci_runs_the_readme_test_command_verbatim():
    _, install_test = readme_commands()
    ci = (ROOT / ".ci" / "run").read_text()
    assert install_test.strip() in ci.splitlines()
