"""Which folder a run may write its results into, and how it replaces it safely. Pure Python, no JAX.

The rule: a run writes only into a folder DIR that

* does not exist (its missing parents are created, and removed again if the run publishes nothing),
* is empty, or
* holds an earlier jaxschools result: a folder with the marker file ``.jaxschools-result`` (written by every
  run, a small JSON object: ``tool``, ``schema`` and ``entries``, the paths the run wrote) and nothing that is
  not listed in it; or, for results written before the marker existed, a folder holding only names a run
  writes (``summary.json``, ``report.html``, ``figures/`` of ``.png`` files, ``timings.json``,
  ``posterior.nc``), with a ``summary.json`` whose JSON object has the keys every such run wrote
  (:data:`LEGACY_SUMMARY_KEYS`: an integer ``schema_version``; ``separate``, ``pooled`` and ``provenance``;
  and the objects ``laplace``, ``mcmc``, ``exact`` and ``config``).

Anything else is refused before any computation (``InputError``: one ``error:`` line, exit status 2) and
nothing is moved or deleted: an existing file, a symbolic link (to a folder or not: a link is never followed
into a deletion; the parents of DIR are resolved, its last component is not), the root folder, a mount point,
the current folder or any folder above it, a folder holding the config or data file, a folder with anything a
run did not write, a folder any part of which cannot be read (what cannot be listed cannot be shown to be a
result). The check is made again, with the same input files, just before the swap, in case DIR changed during
the run.

Temporary folders: a run writes into ``.DIR.tmp-XXXXXXXXXXXX`` beside DIR (twelve hexadecimal digits) and
swaps it into place through ``.DIR.old-XXXXXXXXXXXX`` (two renames). Each of these folders is locked
(``fcntl.flock`` on the folder itself) by its run for the run's whole life, so the kernel releases the lock when
the run dies, even by ``kill -9``, and gets the file :data:`TEMPORARY_MARKER` while locked (it leaves the new
results right after the swap). A later run into the same DIR removes a folder beside DIR only when its lock is
free (its run is dead; a locked one, a live concurrent run's, is never touched) and it is one of ours:

* this name format and the marker (or, a run killed between its mkdir and its marker, this format and empty);
* or the name format of the version before the locks (``tempfile.mkdtemp``: eight characters of
  ``[a-z0-9_]``), mode 0700 as ``mkdtemp`` made it, holding only what that version put there: a ``.tmp-``
  folder the names a run writes, an ``.old-`` folder at most a folder ``previous``.

Anything else beside DIR, such as a user's ``.DIR.old-backup``, is never touched. A dead ``.DIR.old-*`` whose
run was killed between the two renames, with DIR missing, holds the previous results: they are put back as DIR
instead of being removed. On a filesystem without ``flock`` no lock can be taken, and no temporary folder is ever
removed as stale. (A version before these locks held none: its temporary folders look dead, so do not run it
into the same DIR at the same time.)

Folders and files get the permissions of the process's umask (0755 and 0644 under umask 022).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import secrets
import shutil
import stat
from pathlib import Path

from jaxschools.errors import InputError

__all__ = [
    "LEGACY_SUMMARY_KEYS", "MARKER", "RESULT_NAMES", "TEMPORARY_MARKER", "absolute", "check", "create_temporary",
    "discard", "from_argument", "publish", "refusal", "remove_stale", "write_marker",
]

MARKER = ".jaxschools-result"
MARKER_SCHEMA = 1
# What a run before the marker wrote at the top of DIR.
RESULT_NAMES = frozenset({"summary.json", "report.html", "figures", "timings.json", "posterior.nc"})
# The keys of summary.json that every run before the marker wrote (checked against the versions from the first,
# 79ad8cf, to 81f0f4d), with the type of those that hold objects: a user's JSON file with a schema_version key
# alone is not taken for a result.
LEGACY_SUMMARY_KEYS = {"schema_version": int, "separate": None, "pooled": None, "laplace": dict, "mcmc": dict,
                       "exact": dict, "config": dict, "provenance": None}
# Written into each temporary folder while its run holds the lock: only a folder carrying it (or one of the
# exact leftovers described in the module docstring) is removed as a dead run's.
TEMPORARY_MARKER = ".jaxschools-temporary"
_MAX_JSON_BYTES = 1 << 30  # a marker or legacy summary.json larger than this is not ours


class _Held:
    """A run's temporary folder: the descriptor holding its lock, and the parents the run created."""

    def __init__(self, fd, created):
        self.fd, self.created = fd, created


# The temporary folders this process holds, by path (one per run in progress; runs in one process follow
# each other, so this holds one entry at most).
_HELD: dict = {}


def absolute(path) -> Path:
    """``path`` made absolute with its parents resolved and its last component kept as it is (a link stays a
    link, so that it can be refused rather than followed). ``.`` and ``..`` are resolved: they name folders."""
    path = Path(path)
    try:
        if path.name in ("", ".", ".."):
            return path.resolve()
        return path.parent.resolve() / path.name
    except (OSError, RuntimeError) as exc:  # a loop of links in the parents
        raise InputError(f"cannot write results to {path}: {getattr(exc, 'strerror', None) or exc}") from None


def from_argument(text: str) -> str:
    """The ``--out`` argument as an absolute path, or InputError: empty, or holding a NUL character."""
    if text == "":
        raise InputError("--out is empty: give the output folder (without --out, results go to runs/<config name>)")
    if "\0" in text:
        raise InputError(f"--out {text!r} holds a NUL character")
    return str(absolute(text))


def check(path, inputs=()) -> Path:
    """``path`` as :func:`absolute` gives it, if a run may write there; else InputError naming it and why.

    ``inputs``: the run's config and data files (None is skipped); a folder that holds one is refused.
    """
    if "\0" in str(path):
        raise InputError(f"cannot write results to {str(path)!r}: the path holds a NUL character")
    target = absolute(path)
    reason = refusal(target, inputs)
    if reason is not None:
        raise InputError(f"cannot write results to {target}: {reason}")
    return target


def refusal(target: Path, inputs=()) -> str | None:
    """Why a run may not write into ``target`` (absolute, parents resolved), or None when it may."""
    try:
        info = os.lstat(target)
    except FileNotFoundError:
        return _parent_refusal(target)
    except NotADirectoryError:
        return _parent_refusal(target)
    except OSError as exc:
        return exc.strerror or str(exc)
    if stat.S_ISLNK(info.st_mode):
        return (f"it is a symbolic link (to {os.readlink(target)}); a link is never written through or replaced: "
                "give the path of a new folder")
    if stat.S_ISREG(info.st_mode):
        return "it is an existing file, not a folder; give the path of a new folder"
    if not stat.S_ISDIR(info.st_mode):
        return "it exists and is not a folder; give the path of a new folder"
    if target == Path(target.anchor):
        return "it is the root folder; give the path of a new folder"
    cwd = Path(os.getcwd())
    if target == cwd:
        return "it is the current folder, which a run would replace; give a new subfolder, e.g. --out results"
    if target in cwd.parents:
        return "it holds the current folder, which a run would replace; give the path of a new folder"
    if os.path.ismount(target):
        return "it is a mount point, which cannot be replaced; give a new folder inside it"
    for item in inputs:
        if item is not None and target in Path(item).resolve().parents:
            return f"it holds the input file {Path(item).resolve()}, which replacing the folder would delete"
    return _contents_refusal(target)


def _parent_refusal(target: Path) -> str | None:
    """For a ``target`` that does not exist: whether its first existing ancestor can hold a new folder."""
    for parent in target.parents:
        try:
            info = os.stat(parent)  # the parents were resolved: following a link here is what the path means
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            return f"{parent}: {exc.strerror or exc}"
        if not stat.S_ISDIR(info.st_mode):
            return f"{parent} is not a folder"
        return None
    return None


def _raise(error: OSError):
    raise error


def _listing(folder: Path) -> dict:
    """Every entry below ``folder`` (relative path -> 'folder', 'file' or 'other'), links not followed.

    Raises OSError when ``folder`` or a folder below it cannot be listed: ``os.walk`` skips those silently by
    default, and an unreadable folder would look empty (and an empty folder may be replaced)."""
    entries = {}
    for root, dirs, files in os.walk(folder, followlinks=False, onerror=_raise):
        for name in dirs + files:
            path = Path(root, name)
            mode = os.lstat(path).st_mode
            kind = "folder" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else "other"
            entries[str(path.relative_to(folder))] = kind
    return entries


def _read_json(path: Path):
    """The JSON in regular file ``path``, or None when it is not one (missing, a link, too large, not JSON)."""
    try:
        info = os.lstat(path)
        if not stat.S_ISREG(info.st_mode) or info.st_size > _MAX_JSON_BYTES:
            return None
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def _shown(names) -> str:
    names = sorted(names)
    text = ", ".join(names[:5])
    return text + (f", ... ({len(names)} in all)" if len(names) > 5 else "")


def _contents_refusal(target: Path) -> str | None:
    try:
        entries = _listing(target)
    except OSError as exc:
        where = exc.filename if exc.filename is not None else target
        return (f"cannot read {where} ({exc.strerror or exc}), so it cannot be told from a folder of yours; "
                "give the path of a new folder")
    if not entries:
        return None
    if MARKER in entries:
        marker = _read_json(target / MARKER)
        if not (isinstance(marker, dict) and marker.get("tool") == "jaxschools"
                and isinstance(marker.get("entries"), dict)):
            return f"its {MARKER} is not a jaxschools marker; give the path of a new folder"
        # The temporary folder's marker is left in DIR only by a run killed right after its swap.
        foreign = [name for name, kind in entries.items() if name not in (MARKER, TEMPORARY_MARKER)
                   and marker["entries"].get(name) != kind
                   and marker["entries"].get(os.path.dirname(name), "folder") == "folder"]  # outermost only
        if foreign:
            return (f"it holds an earlier jaxschools result and files that no run wrote ({_shown(foreign)}), "
                    "which replacing it would delete; move them out, or give the path of a new folder")
        return None
    # A result written before the marker existed: only the names a run writes, and a jaxschools summary.
    foreign = [name for name, kind in entries.items() if not _written_before_the_marker(name, kind)]
    if foreign:
        return (f"it is not empty and holds no earlier jaxschools result (it has {_shown(foreign)}); "
                "give the path of a new or empty folder")
    if not _legacy_summary(_read_json(target / "summary.json")):
        return (f"it has no {MARKER} marker and no jaxschools summary.json, so it is not an earlier jaxschools "
                "result; give the path of a new or empty folder")
    return None


def _legacy_summary(summary) -> bool:
    """Whether ``summary`` (parsed JSON) is a summary.json that a run before the marker wrote."""
    if not isinstance(summary, dict):
        return False
    for key, kind in LEGACY_SUMMARY_KEYS.items():
        if key not in summary:
            return False
        value = summary[key]
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            return False
        if kind is dict and not isinstance(value, dict):
            return False
    return True


def _written_before_the_marker(name: str, kind: str) -> bool:
    """Whether entry ``name`` (relative path) of kind ``kind`` is one a run before the marker wrote."""
    top, _, rest = name.partition(os.sep)
    if top not in RESULT_NAMES:
        return rest != ""  # a foreign top-level entry is named once, not with everything below it
    if top != "figures":
        return kind == "file"
    return kind == "folder" if not rest else kind == "file" and os.sep not in rest and rest.endswith(".png")


def write_marker(folder) -> None:
    """Mark ``folder`` as a jaxschools result: ``.jaxschools-result`` lists every entry below it."""
    folder = Path(folder)
    entries = {name: kind for name, kind in _listing(folder).items() if name not in (MARKER, TEMPORARY_MARKER)}
    with open(folder / MARKER, "w", encoding="utf-8") as handle:
        json.dump({"tool": "jaxschools", "schema": MARKER_SCHEMA, "entries": dict(sorted(entries.items()))},
                  handle, indent=1)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())


def _same_folder(path: Path, fd: int) -> bool:
    try:
        here, held = os.lstat(path), os.fstat(fd)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (held.st_dev, held.st_ino)


def _locked_folder(parent: Path, prefix: str):
    """A new folder ``parent/prefix<12 hex digits>``, umask permissions, locked by this process and carrying
    :data:`TEMPORARY_MARKER`: (path, descriptor).

    Between the mkdir and the lock another run's clean-up may take the empty folder for a dead run's and
    remove it; the folder is then made again under another name. The marker is written only once the lock is
    held, so a clean-up never sees a marked folder whose run is alive and unlocked.
    """
    while True:
        path = parent / f"{prefix}{secrets.token_hex(6)}"
        try:
            os.mkdir(path)  # 0o777 less the umask (tempfile.mkdtemp would force 0o700)
        except FileExistsError:
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # waits only while a clean-up holds it, to remove it
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF):
                os.close(fd)
                raise
            # No locks on this filesystem: no clean-up can take the lock either, so none removes the folder.
        if not _same_folder(path, fd):
            os.close(fd)
            continue
        try:
            with open(path / TEMPORARY_MARKER, "x", encoding="utf-8") as handle:
                json.dump({"tool": "jaxschools", "folder": path.name}, handle)
                handle.write("\n")
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            os.close(fd)
            raise
        return path, fd


def _stale_names(name: str):
    """The patterns of the temporary folders of DIR ``name``: (this version's, the version before the locks')."""
    stem = re.escape(f".{name}.")
    return (re.compile(stem + r"(?P<kind>tmp|old)-[0-9a-f]{12}\Z"),
            re.compile(stem + r"(?P<kind>tmp|old)-[a-z0-9_]{8}\Z"))  # tempfile.mkdtemp's eight characters


def _removable(path: Path, kind: str, legacy: bool) -> str | None:
    """Whether the unlocked folder ``path`` is a dead run's temporary folder: 'marked' (this version's, with
    its marker), 'empty' (this version's, killed before its marker was written), 'legacy' (the version before
    the locks: its mode and contents) or None (not ours: never touched)."""
    try:
        entries = _listing(path)
        mode = stat.S_IMODE(os.lstat(path).st_mode)
    except OSError:
        return None
    if not legacy:
        if not entries:
            return "empty"
        marker = _read_json(path / TEMPORARY_MARKER)
        if isinstance(marker, dict) and marker.get("tool") == "jaxschools" and marker.get("folder") == path.name:
            return "marked"
        return None
    if mode != 0o700:  # tempfile.mkdtemp made it so
        return None
    if kind == "tmp":
        return "legacy" if all(_written_before_the_marker(name, what) for name, what in entries.items()) else None
    # An .old- folder held at most the previous DIR, moved in as "previous".
    if any(name.partition(os.sep)[0] != "previous" for name in entries):
        return None
    return "legacy" if entries.get("previous", "folder") == "folder" else None


def remove_stale(out_dir) -> list:
    """Remove the dead runs' temporary folders beside ``out_dir`` (their lock is free and they are ours: see the
    module docstring); return what was removed or put back. A dead ``.old-`` folder's ``previous`` results go
    back to DIR when DIR is missing (its run was killed between the two renames of its swap); the version
    before the locks moved any DIR there, so its ``previous`` is removed only if a run could have replaced it
    (:func:`refusal`'s rule for its contents), and kept, with its folder, otherwise."""
    out_dir = Path(out_dir)
    patterns = _stale_names(out_dir.name)
    done = []
    try:
        entries = list(os.scandir(out_dir.parent))
    except OSError:
        return done
    for entry in entries:
        matches = [pattern.match(entry.name) for pattern in patterns]
        if not any(matches) or not entry.is_dir(follow_symlinks=False):
            continue
        legacy, match = matches[0] is None, matches[0] or matches[1]
        path = Path(entry.path)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a live run holds it (or this filesystem has no locks: then nobody can tell)
            if not _same_folder(path, fd):
                continue
            how = _removable(path, match["kind"], legacy)
            if how is None:
                continue
            if how == "empty":
                os.rmdir(path)  # fails, and keeps it, if something was put in meanwhile
                done.append(path)
                continue
            previous = path / "previous"
            has_previous = os.path.lexists(previous) and stat.S_ISDIR(os.lstat(previous).st_mode)
            if match["kind"] == "old" and has_previous:
                if not os.path.lexists(out_dir):
                    os.rename(previous, out_dir)
                    done.append(out_dir)
                elif legacy and _contents_refusal(previous) is not None:
                    continue  # a folder the old version moved aside without checking it: not ours to delete
            shutil.rmtree(path, ignore_errors=True)
            done.append(path)
        except OSError:
            continue  # best effort: a folder that cannot be removed now is tried again by the next run
        finally:
            os.close(fd)
    return done


def _make_parents(folder: Path) -> list:
    """Create ``folder`` and its missing parents; return the ones this call created, outermost first."""
    missing = []
    while not os.path.lexists(folder):
        missing.append(folder)
        folder = folder.parent
    created = []
    try:
        for path in reversed(missing):
            try:
                os.mkdir(path)
            except FileExistsError:
                if not os.path.isdir(path):
                    raise
                continue  # made meanwhile by someone else: not ours to remove
            created.append(path)
    except OSError:
        _remove_empty(created)
        raise
    return created


def _remove_empty(created) -> None:
    """Remove the folders in ``created`` (outermost first) that are empty, innermost first."""
    for path in reversed(created):
        try:
            os.rmdir(path)
        except OSError:
            return  # not empty (it holds a resume store, or someone else's files): keep it and its parents


def create_temporary(out_dir) -> Path:
    """Create DIR's missing parents, remove dead runs' temporary folders beside DIR, and return a new
    temporary folder ``.DIR.tmp-XXXX`` beside it, locked until :func:`publish` or :func:`discard`.

    Raises OSError when the parent cannot be created or written; the parents made so far are removed."""
    out_dir = Path(out_dir)
    created = _make_parents(out_dir.parent)
    try:
        remove_stale(out_dir)
        path, fd = _locked_folder(out_dir.parent, f".{out_dir.name}.tmp-")
    except BaseException:
        _remove_empty(created)
        raise
    _HELD[path] = _Held(fd, created)
    return path


def publish(tmp_dir, out_dir, inputs=()) -> None:
    """Mark ``tmp_dir`` as a result and swap it into ``out_dir``; the previous results are removed only
    afterwards, and put back if the swap fails. Refuses (InputError) when ``out_dir`` is no longer one a run
    may replace: :func:`refusal` again, with the run's input files ``inputs`` as :func:`check` had them."""
    tmp_dir, out_dir = Path(tmp_dir), Path(out_dir)
    reason = refusal(out_dir, inputs)
    if reason is not None:
        raise InputError(f"cannot write results to {out_dir}: {reason}")
    write_marker(tmp_dir)
    old = old_fd = None
    keep_old = False  # True only if the previous results could not be put back: then they stay in old
    try:
        if os.path.lexists(out_dir):
            old, old_fd = _locked_folder(out_dir.parent, f".{out_dir.name}.old-")
            os.rename(out_dir, old / "previous")
        try:
            os.rename(tmp_dir, out_dir)
        except OSError:
            if old is not None and os.path.lexists(old / "previous"):
                keep_old = True
                os.rename(old / "previous", out_dir)  # put the previous results back rather than leave no DIR
                keep_old = False
            raise
        with contextlib.suppress(OSError):  # the results are in place: a failure here is no failed run
            os.unlink(out_dir / TEMPORARY_MARKER)  # not a temporary folder any more (a refusal ignores one left)
        held = _HELD.pop(tmp_dir, None)
        if held is not None:
            os.close(held.fd)
    finally:
        if old is not None:
            if not keep_old:  # a kept one is put back as DIR by the next run, once this one has ended
                shutil.rmtree(old, ignore_errors=True)
            os.close(old_fd)


def discard(tmp_dir) -> None:
    """Remove an unpublished temporary folder, release its lock, and remove the parents its run created
    when they are empty."""
    tmp_dir = Path(tmp_dir)
    shutil.rmtree(tmp_dir, ignore_errors=True)
    held = _HELD.pop(tmp_dir, None)
    if held is not None:
        os.close(held.fd)
        _remove_empty(held.created)


def __dir__():
    # The public names only, not the imports (``dir(js.diagnostics)`` lists no ``jax`` or ``jnp``).
    return list(__all__)
