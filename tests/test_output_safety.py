"""Output-folder safety of `jaxschools run` (issue #13, findings 1, 11, 12 and 13).

The rule (``jaxschools/output_folder.py``): a run writes only into a folder that does not exist, is empty, or
holds an earlier jaxschools result; anything else is refused before any work with one ``error:`` line and exit
status 2, and nothing of the user's is moved or deleted. Dead runs' temporary folders are removed by the next
run into the same place, live ones never; results get the umask's permissions.

The analysis and the report are replaced by instant stand-ins (what is under test is the command line's
handling of folders); the refusals themselves come before JAX is imported (``tests/test_bad_input.py`` runs
them in a fresh interpreter and checks that JAX stays out).
"""

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import types
from pathlib import Path

import pytest

from jaxschools import cli

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def stand_ins(monkeypatch):
    """The analysis and the report replaced by instant ones; ``hooks["analysis"]()`` runs during the analysis."""
    from jaxschools import experiments, report

    hooks = {}
    monkeypatch.setenv("JAXSCHOOLS_CACHE_DIR", "")  # leave this process's JAX configuration alone

    def run(config, dataset, progress=None, store_dir=None, mesh=None, between=None):
        hooks.get("analysis", lambda: None)()
        return types.SimpleNamespace(summary={"schema_version": 1, "seed": config["sampler"]["seed"]}, timings={})

    def write_outputs(result, out_dir, figures=True):
        (out_dir / "figures").mkdir()
        (out_dir / "figures" / "a.png").write_bytes(b"\x89PNG")
        (out_dir / "report.html").write_text(f"<html>{result.summary['seed']}</html>")

    monkeypatch.setattr(experiments, "run", run)
    monkeypatch.setattr(report, "write_outputs", write_outputs)
    return hooks


def _main(capsys, *args):
    """Exit status and stderr lines of ``jaxschools run ARGS --quiet``."""
    capsys.readouterr()
    code = cli.main(["run", *args, "--quiet"])
    return code, capsys.readouterr().err.splitlines()


def _snapshot(folder: Path) -> dict:
    """Every entry below ``folder``: files by content, folders as None, links by target."""
    return {
        str(path.relative_to(folder)): ("->" + os.readlink(path)) if path.is_symlink()
        else None if path.is_dir() else path.read_bytes()
        for path in sorted(folder.rglob("*"))
    }


def _refused(capsys, args, path, why):
    code, err = _main(capsys, *args)
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith(f"error: cannot write results to {path}: "), err
    assert why in err[0], err


def _seed(folder: Path) -> int:
    return json.loads((folder / "summary.json").read_text())["seed"]


# --- finding 1: --out never replaces what is not an earlier result ----------------------------------------------


def test_out_dot_in_a_users_folder_is_refused_and_nothing_is_moved(tmp_path, monkeypatch, capsys, stand_ins):
    work = tmp_path / "w"
    (work / "sub").mkdir(parents=True)
    (work / "important.txt").write_text("keep")
    (work / "sub" / "notes.txt").write_text("keep too")
    monkeypatch.chdir(work)
    before = _snapshot(tmp_path)
    _refused(capsys, ["--out", "."], work, "it is the current folder")
    assert _snapshot(tmp_path) == before and Path.cwd() == work


def test_an_existing_file_is_refused(tmp_path, monkeypatch, capsys, stand_ins):
    (tmp_path / "precious.txt").write_text("keep")
    monkeypatch.chdir(tmp_path)
    before = _snapshot(tmp_path)
    _refused(capsys, ["--out", "precious.txt"], tmp_path / "precious.txt", "it is an existing file")
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("pointee", ["users-folder", "earlier-result"])
def test_a_symbolic_link_is_refused_and_not_followed(tmp_path, capsys, stand_ins, pointee):
    """A link is refused even to an earlier result: the run would replace the link, or empty the folder."""
    folder = tmp_path / "target"
    if pointee == "users-folder":
        folder.mkdir()
        (folder / "a.txt").write_text("keep")
    else:
        assert _main(capsys, "--out", str(folder))[0] == 0
    (tmp_path / "link").symlink_to(folder)
    before = _snapshot(tmp_path)
    _refused(capsys, ["--out", str(tmp_path / "link")], tmp_path / "link", "it is a symbolic link")
    assert _snapshot(tmp_path) == before


def test_the_root_folder_is_refused_before_any_work(capsys, stand_ins):
    """The original moved ``/`` aside only after the whole run, failed with exit 1 and left ``/..old-*``."""
    before = set(os.listdir("/"))
    try:
        _refused(capsys, ["--out", "/"], "/", "it is the root folder")
        assert set(os.listdir("/")) == before
    finally:
        for name in set(os.listdir("/")) - before:  # what a run that was not refused left behind
            if name.startswith(("..tmp-", "..old-")):
                shutil.rmtree(Path("/", name))


def test_a_folder_above_the_current_one_is_refused(tmp_path, monkeypatch, capsys, stand_ins):
    deep = tmp_path / "w" / "deep"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    before = _snapshot(tmp_path)
    _refused(capsys, ["--out", ".."], tmp_path / "w", "it holds the current folder")
    assert _snapshot(tmp_path) == before


def test_a_folder_holding_the_data_file_is_refused(tmp_path, capsys, stand_ins):
    (tmp_path / "d").mkdir()
    data = tmp_path / "d" / "data.csv"
    data.write_text("name,y,sigma\n" + "".join(f"{n},{y},10\n" for n, y in zip("ABCDEFGH", range(8))))
    before = _snapshot(tmp_path)
    _refused(capsys, ["--data", str(data), "--out", str(tmp_path / "d")], tmp_path / "d",
             f"it holds the input file {data}")
    assert _snapshot(tmp_path) == before


def test_a_users_folder_is_refused_and_its_files_named(tmp_path, capsys, stand_ins):
    mine = tmp_path / "mine"
    (mine / "sub").mkdir(parents=True)
    (mine / "important.txt").write_text("keep")
    (mine / "sub" / "x").write_text("keep")
    before = _snapshot(tmp_path)
    _refused(capsys, ["--out", str(mine)], mine, "holds no earlier jaxschools result (it has important.txt, sub)")
    assert _snapshot(tmp_path) == before


def test_files_added_to_an_earlier_result_are_not_deleted(tmp_path, capsys, stand_ins):
    out = tmp_path / "run"
    assert _main(capsys, "--out", str(out))[0] == 0
    (out / "notes.txt").write_text("my notes")
    (out / "figures" / "mine.png").write_bytes(b"mine")
    before = _snapshot(tmp_path)
    _refused(capsys, ["--out", str(out), "--set", "sampler.seed=2"], out, "files that no run wrote")
    assert _snapshot(tmp_path) == before


def _legacy_result(folder: Path, extra=None, summary=None):
    """The layout a run before the marker wrote."""
    (folder / "figures").mkdir(parents=True)
    (folder / "figures" / "trace.png").write_bytes(b"\x89PNG")
    (folder / "summary.json").write_text(json.dumps(summary or {"schema_version": 1, "seed": 7}))
    for name in ("report.html", "timings.json", "posterior.nc"):
        (folder / name).write_text("x")
    if extra:
        (folder / extra).write_text("keep")


@pytest.mark.parametrize("earlier", ["result", "empty", "before-the-marker"])
def test_an_earlier_result_or_an_empty_folder_is_replaced_whole(tmp_path, capsys, stand_ins, earlier):
    out = tmp_path / "run"
    if earlier == "result":
        assert _main(capsys, "--out", str(out), "--set", "sampler.seed=1")[0] == 0
    elif earlier == "empty":
        out.mkdir()
    else:
        _legacy_result(out)
    assert _main(capsys, "--out", str(out), "--set", "sampler.seed=2") == (0, [])
    assert _seed(out) == 2 and not (out / "posterior.nc").exists() and not (out / "figures" / "trace.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


@pytest.mark.parametrize("damage", ["a-users-file", "summary-without-schema-version", "a-folder-in-figures"])
def test_what_only_looks_like_an_earlier_result_is_refused(tmp_path, capsys, stand_ins, damage):
    out = tmp_path / "run"
    _legacy_result(out, extra="thesis.tex" if damage == "a-users-file" else None,
                   summary={"seed": 7} if damage == "summary-without-schema-version" else None)
    if damage == "a-folder-in-figures":
        (out / "figures" / "drafts").mkdir()
    before = _snapshot(tmp_path)
    code, err = _main(capsys, "--out", str(out))
    assert code == 2 and len(err) == 1 and err[0].startswith(f"error: cannot write results to {out}: "), err
    assert _snapshot(tmp_path) == before


def test_a_folder_that_becomes_a_users_during_the_run_is_not_replaced(tmp_path, capsys, stand_ins):
    """The rule is checked again just before the swap."""
    out = tmp_path / "run"

    def users_folder_appears():
        out.mkdir()
        (out / "important.txt").write_text("keep")

    stand_ins["analysis"] = users_folder_appears
    _refused(capsys, ["--out", str(out)], out, "holds no earlier jaxschools result")
    assert _snapshot(tmp_path) == {"run": None, "run/important.txt": b"keep"}  # no temporary folder left


# --- finding 11: --out "" and the parents of an interrupted first run ---------------------------------------------


def test_an_empty_out_is_refused(tmp_path, monkeypatch, capsys, stand_ins):
    monkeypatch.chdir(tmp_path)
    code, err = _main(capsys, "--out", "")
    assert code == 2 and len(err) == 1 and err[0].startswith("error: --out is empty"), err
    assert list(tmp_path.iterdir()) == []  # not taken for the default runs/<name>


@pytest.mark.parametrize("out", [None, "keep/new/deeper/run"])
@pytest.mark.parametrize("how", ["interrupt", "error"])
def test_a_first_run_that_publishes_nothing_removes_the_parents_it_created(tmp_path, monkeypatch, capsys,
                                                                           stand_ins, out, how):
    """Only the parents it created, and only when empty: ``keep`` existed before and stays."""
    (tmp_path / "keep").mkdir()
    monkeypatch.chdir(tmp_path)

    def fail():
        raise KeyboardInterrupt if how == "interrupt" else cli.JaxschoolsError("the analysis failed")

    stand_ins["analysis"] = fail
    code, err = _main(capsys, *([] if out is None else ["--out", out]))
    assert code == (130 if how == "interrupt" else 1) and len(err) == 1, err
    assert _snapshot(tmp_path) == {"keep": None}


# --- finding 12: temporary folders of dead runs ----------------------------------------------------------------------

HOLDER = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()
"""


def test_dead_runs_temporaries_are_removed_and_a_live_runs_are_kept(tmp_path, capsys, stand_ins):
    out = tmp_path / "run"
    assert _main(capsys, "--out", str(out), "--set", "sampler.seed=1")[0] == 0
    # Left by runs killed with kill -9 (the original's names: mkdtemp's eight characters).
    for name in (".run.tmp-k1_x9abc", ".run.old-deadbeef/previous"):
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "summary.json").write_text("{}")
    # Not a run's temporary folder of this DIR: never touched.
    for name in (".other.tmp-abc", ".run.tmp-a.b"):
        (tmp_path / name).mkdir()
    live = tmp_path / ".run.tmp-live0001"
    live.mkdir()
    (live / "summary.json").write_text("being written")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(live)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        assert _main(capsys, "--out", str(out), "--set", "sampler.seed=2") == (0, [])
        assert _seed(out) == 2
        assert sorted(p.name for p in tmp_path.iterdir()) == [
            ".other.tmp-abc", ".run.tmp-a.b", ".run.tmp-live0001", "run"]
        assert (live / "summary.json").read_text() == "being written"
    finally:
        holder.kill()
        holder.communicate()
    # Its run is dead now: the next run removes it.
    assert _main(capsys, "--out", str(out), "--set", "sampler.seed=3") == (0, [])
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.tmp-abc", ".run.tmp-a.b", "run"]


# A run killed by SIGKILL during its analysis, in a fresh interpreter: JAX and the analysis modules are stand-ins,
# so the child takes a fraction of a second. What is under test is what the command line leaves behind.
KILLED = r"""
import os, signal, sys, types
jax = types.ModuleType("jax")
jax.config = types.SimpleNamespace(update=lambda *args: None)
jax.local_devices = lambda: ["cpu"]
sys.modules["jax"] = jax
for name in ("data", "experiments", "report", "sharding"):
    module = types.ModuleType("jaxschools." + name)
    module.from_table = lambda table: types.SimpleNamespace(names=table["names"])
    module.run = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
    sys.modules["jaxschools." + name] = module
from jaxschools.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_run_killed_with_sigkill_leaves_a_temporary_folder_that_the_next_run_removes(tmp_path, capsys,
                                                                                        stand_ins):
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAXSCHOOLS_CACHE_DIR="")
    proc = subprocess.run([sys.executable, "-c", KILLED, "run", "--out", str(out), "--quiet"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(".run.tmp-"), left
    assert _main(capsys, "--out", str(out)) == (0, [])
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_a_run_killed_between_the_two_renames_gets_its_previous_results_back(tmp_path, capsys, stand_ins):
    """DIR was moved into ``.DIR.old-*`` and the new results not yet moved in: the next run puts it back."""
    from jaxschools import output_folder

    out = tmp_path / "run"
    assert _main(capsys, "--out", str(out), "--set", "sampler.seed=1")[0] == 0
    (tmp_path / ".run.old-0123abcd").mkdir()
    out.rename(tmp_path / ".run.old-0123abcd" / "previous")
    assert output_folder.remove_stale(out) == [out, tmp_path / ".run.old-0123abcd"]
    assert _seed(out) == 1 and [p.name for p in tmp_path.iterdir()] == ["run"]


# --- finding 13: permissions -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_results_get_the_umasks_permissions(tmp_path, monkeypatch, capsys, stand_ins, umask):
    monkeypatch.chdir(tmp_path)
    previous = os.umask(umask)
    try:
        assert _main(capsys) == (0, [])  # runs/eight_schools: the parent runs/ is created too
    finally:
        os.umask(previous)
    modes = {str(path.relative_to(tmp_path)): stat.S_IMODE(path.stat().st_mode) for path in tmp_path.rglob("*")}
    assert {"runs", "runs/eight_schools", "runs/eight_schools/figures", "runs/eight_schools/report.html",
            "runs/eight_schools/summary.json"} <= set(modes)
    for name, mode in modes.items():
        expected = 0o777 & ~umask if (tmp_path / name).is_dir() else 0o666 & ~umask
        assert mode == expected, (name, oct(mode), oct(expected))
