"""Output-folder safety of `jaxschools run` (issue #13, findings 1, 11, 12 and 13).

The rule (``jaxschools/app/output_folder.py``): a run writes only into a folder that does not exist, is empty, or
holds an earlier jaxschools result; anything else is refused before any work with one ``error:`` line and exit
status 2, and nothing of the user's is moved or deleted. Dead runs' temporary folders are removed by the next
run into the same place, live ones never; results get the umask's permissions.

The analysis and the report are replaced by instant stand-ins (what is under test is the command line's
handling of folders); the refusals themselves come before JAX is imported (``tests/test_bad_input.py`` runs
them in a fresh interpreter and checks that JAX stays out).
"""

import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import pytest

from jaxschools import cli

ROOT = Path(__file__).resolve().parents[1]
TEMPORARY = ".jaxschools-temporary"  # the marker of a run's temporary folder (output_folder.TEMPORARY_MARKER)


@pytest.fixture
def stand_ins(monkeypatch):
    """The analysis and the report replaced by instant ones; ``hooks["analysis"]()`` runs during the analysis."""
    from jaxschools.app import experiments
    from jaxschools.presentation import report

    hooks = {}
    monkeypatch.setenv("JAXSCHOOLS_CACHE_DIR", "")  # leave this process's JAX configuration alone

    def run(config, dataset, table=None, progress=None, store_dir=None, mesh=None, between=None):
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


# The top-level keys of the summary.json that every run before the marker wrote (81f0f4d's analysis.py; the
# values are abridged).
LEGACY_SUMMARY = {"schema_version": 1, "data": {"names": ["A"], "y": [1.0], "sigma": [2.0]}, "separate": {},
                  "pooled": {}, "laplace": {"converged": True}, "mcmc": {"kernel": "rwmh"}, "posterior": {},
                  "theta": {}, "shrinkage": [0.5], "shrinkage_mcse": [0.01], "queries": {}, "predictive": {},
                  "exact": {}, "config": {"sampler": {"seed": 7}}, "provenance": {"jax": "0.4.30"}}


def _legacy_result(folder: Path, extra=None, summary=None):
    """The layout a run before the marker wrote."""
    (folder / "figures").mkdir(parents=True)
    (folder / "figures" / "trace.png").write_bytes(b"\x89PNG")
    (folder / "summary.json").write_text(json.dumps(summary or LEGACY_SUMMARY))
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


SUMMARIES = {
    "summary-without-schema-version": {key: value for key, value in LEGACY_SUMMARY.items() if key != "schema_version"},
    # A user's JSON file with a schema_version key is not a jaxschools summary (the first rule took it for one).
    "summary-with-only-a-schema-version": {"schema_version": 1, "seed": 7},
    "summary-without-mcmc": {key: value for key, value in LEGACY_SUMMARY.items() if key != "mcmc"},
    "summary-with-a-text-schema-version": dict(LEGACY_SUMMARY, schema_version="1"),
}


@pytest.mark.parametrize("damage", ["a-users-file", "a-folder-in-figures", *SUMMARIES])
def test_what_only_looks_like_an_earlier_result_is_refused(tmp_path, capsys, stand_ins, damage):
    out = tmp_path / "run"
    _legacy_result(out, extra="thesis.tex" if damage == "a-users-file" else None, summary=SUMMARIES.get(damage))
    if damage == "a-folder-in-figures":
        (out / "figures" / "drafts").mkdir()
    before = _snapshot(tmp_path)
    code, err = _main(capsys, "--out", str(out))
    assert code == 2 and len(err) == 1 and err[0].startswith(f"error: cannot write results to {out}: "), err
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("unreadable", ["the-folder", "a-subfolder-of-a-result"])
def test_a_folder_that_cannot_be_read_is_refused(tmp_path, monkeypatch, capsys, stand_ins, unreadable):
    """A folder the run cannot list (mode 0300 for another user, say) is not taken for an empty one.

    The tests run as root, who reads a folder of mode 0300 all the same; so the kernel's answer to anyone else
    is simulated: ``os.scandir``, with which ``os.walk`` lists a folder, raises PermissionError for it. The
    first rule's ``os.walk`` skipped the folder in silence: the run replaced DIR and deleted the files in it."""
    out = tmp_path / "run"
    if unreadable == "the-folder":
        out.mkdir()
        hidden = out
    else:
        assert _main(capsys, "--out", str(out), "--set", "sampler.seed=1")[0] == 0
        hidden = out / "figures"  # listed in the marker as a folder of the run's
    (hidden / "mine.txt").write_text("keep")
    before = _snapshot(tmp_path)
    scandir = os.scandir

    def unreadable_scandir(path="."):
        if not isinstance(path, int) and os.fspath(path) == str(hidden):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
        return scandir(path)

    with monkeypatch.context() as patch:
        patch.setattr(os, "scandir", unreadable_scandir)
        _refused(capsys, ["--out", str(out), "--set", "sampler.seed=2"], out,
                 f"cannot read {hidden} (Permission denied)")
    assert _snapshot(tmp_path) == before


def test_an_input_file_that_moves_into_dir_during_the_run_is_refused_at_the_swap(tmp_path, capsys, stand_ins):
    """The check before the swap takes the run's input files too: here the data file is a link, pointed during
    the run at a file in DIR (which has a result's name, so the contents rule alone would let it go)."""
    out = tmp_path / "run"
    assert _main(capsys, "--out", str(out), "--set", "sampler.seed=1")[0] == 0
    table = "name,y,sigma\n" + "".join(f"{n},{y},10\n" for n, y in zip("ABCDEFGH", range(8)))
    (tmp_path / "data.csv").write_text(table)
    link = tmp_path / "link.csv"
    link.symlink_to(tmp_path / "data.csv")

    def data_moves_into_dir():
        (out / "report.html").write_text(table)
        link.unlink()
        link.symlink_to(out / "report.html")

    stand_ins["analysis"] = data_moves_into_dir
    _refused(capsys, ["--data", str(link), "--out", str(out), "--set", "sampler.seed=2"], out,
             f"it holds the input file {out / 'report.html'}")
    assert (out / "report.html").read_text() == table
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.csv", "link.csv", "run"]  # no temporary left


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
    # Left by runs of the version before the locks killed with kill -9, made as it made them (tempfile.mkdtemp).
    dead_tmp = tempfile.mkdtemp(prefix=".run.tmp-", dir=tmp_path)
    (Path(dead_tmp) / "summary.json").write_text("{")  # cut short
    dead_old = tempfile.mkdtemp(prefix=".run.old-", dir=tmp_path)
    _legacy_result(Path(dead_old) / "previous")
    # Not a run's temporary folder of this DIR: never touched.
    for name in (".other.tmp-abc", ".run.tmp-a.b"):
        (tmp_path / name).mkdir()
    live = tmp_path / ".run.tmp-live0001"
    live.mkdir(mode=0o700)
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
for name in ("core.data", "app.experiments", "presentation.report", "core.sharding"):
    module = types.ModuleType("jaxschools." + name)
    module.from_table = lambda table: types.SimpleNamespace(names=table["names"])
    module.run = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
    sys.modules["jaxschools." + name] = module
    package, _, short = name.partition(".")
    setattr(__import__("jaxschools." + package, fromlist=["_"]), short, module)
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


def _dead_folder(parent: Path, prefix: str, version: str) -> Path:
    """A temporary folder as a run of ``version`` made it, left by a kill -9 (its lock released)."""
    from jaxschools.app import output_folder

    if version == "before-the-locks":
        return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    path, fd = output_folder._locked_folder(parent, prefix)
    os.close(fd)
    return path


@pytest.mark.parametrize("version", ["current", "before-the-locks"])
def test_a_run_killed_between_the_two_renames_gets_its_previous_results_back(tmp_path, capsys, stand_ins,
                                                                             version):
    """DIR was moved into ``.DIR.old-*`` and the new results not yet moved in: the next run puts it back."""
    from jaxschools.app import output_folder

    out = tmp_path / "run"
    assert _main(capsys, "--out", str(out), "--set", "sampler.seed=1")[0] == 0
    old = _dead_folder(tmp_path, ".run.old-", version)
    out.rename(old / "previous")
    assert output_folder.remove_stale(out) == [out, old]
    assert _seed(out) == 1 and [p.name for p in tmp_path.iterdir()] == ["run"]


def test_only_folders_a_run_made_are_removed_beside_dir(tmp_path, capsys, stand_ins):
    """A clean-up removes a dead run's temporary folder, and nothing else named like one: the first rule removed
    every unlocked ``.DIR.tmp-*`` and ``.DIR.old-*`` folder, a user's backup ``.run.old-backup`` among them."""
    out = tmp_path / "run"
    assert _main(capsys, "--out", str(out), "--set", "sampler.seed=1")[0] == 0
    theirs = {
        ".run.old-backup": "previous/summary.json",  # a user's backup of a result
        ".run.old-20240101": "notes.txt",  # the old version's name format, not its mode (0700) or contents
        ".run.tmp-0123456789ab": "notes.txt",  # this version's name format, but no marker
    }
    for name, inside in theirs.items():
        (tmp_path / name / inside).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name / inside).write_text("keep")
    for name, inside in {".run.old-2024_jan": "notes.txt", ".run.tmp-2024_jan": "thesis.tex"}.items():
        (tmp_path / name).mkdir(mode=0o700)  # the old version's name and mode, but not what it put there
        (tmp_path / name / inside).write_text("keep")
        theirs[name] = inside
    # The old version moved any DIR aside: a user's folder in a dead .old- folder is kept, DIR being there.
    moved = _dead_folder(tmp_path, ".run.old-", "before-the-locks")
    (moved / "previous").mkdir()
    (moved / "previous" / "thesis.tex").write_text("keep")
    theirs[moved.name] = "previous/thesis.tex"
    # Dead runs' folders: marked (killed during its run), empty (killed before its marker), old version's.
    ours = [_dead_folder(tmp_path, ".run.tmp-", "current"), _dead_folder(tmp_path, ".run.old-", "current"),
            _dead_folder(tmp_path, ".run.tmp-", "before-the-locks")]
    (ours[0] / "report.html").write_text("<html")
    (ours[1] / TEMPORARY).unlink(missing_ok=True)
    before = _snapshot(tmp_path)
    assert _main(capsys, "--out", str(out), "--set", "sampler.seed=2") == (0, [])
    assert _seed(out) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*theirs, "run"])
    def kept(snapshot):
        return {name: value for name, value in snapshot.items() if name.split("/")[0] in theirs}

    assert kept(_snapshot(tmp_path)) == kept(before)
    assert all((tmp_path / name / inside).read_text() == "keep" for name, inside in theirs.items())


def test_the_temporary_marker_does_not_stay_in_the_results(tmp_path, capsys, stand_ins):
    out = tmp_path / "run"
    for seed in (1, 2):  # a first result, then one that replaces it
        assert _main(capsys, "--out", str(out), "--set", f"sampler.seed={seed}") == (0, [])
        assert not (out / TEMPORARY).exists() and _seed(out) == seed
    # Left in DIR by a run killed right after its swap: the next run still takes DIR for a result.
    (out / TEMPORARY).write_text("{}")
    assert _main(capsys, "--out", str(out), "--set", "sampler.seed=3") == (0, [])
    assert _seed(out) == 3 and sorted(p.name for p in tmp_path.iterdir()) == ["run"]


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
