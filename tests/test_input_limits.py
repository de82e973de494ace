"""Issue #13, findings 7 (last two parts), 8 and 9: input files read with a size limit and streamed,
control characters refused in school names, the added school's sigma bounded, and the SBC band bounded in
time for any number of ranks (checked against scipy's binomial distribution).

The command-line refusals themselves (exit 2, one line, nothing written, before JAX) are cases of
``tests/test_bad_input.py``; here are the library-level checks and the ones that need a timeout or a pipe.
"""

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from jaxschools.core import calibration, validation
from jaxschools.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
HEADER = "name,y,sigma\n"


def _input_files():
    # Imported here, so that on a checkout without the module only the tests that use it fail.
    from jaxschools.core import input_files

    return input_files


# --- finding 9: size limit, non-regular files, streamed validation --------------------------------------------


class _CountingFile:
    """A binary file that counts the bytes read through it (what the reader asks of the file it opened)."""

    def __init__(self, handle, counter):
        self._handle, self._counter = handle, counter

    def readinto(self, buffer):
        count = self._handle.readinto(buffer)
        self._counter.append(count or 0)
        return count

    def read(self, *args):
        data = self._handle.read(*args)
        self._counter.append(len(data))
        return data

    def __getattr__(self, name):
        return getattr(self._handle, name)


def test_a_regular_file_over_the_limit_is_refused_from_its_size_without_reading_it(tmp_path, monkeypatch):
    """A 200 MB CSV (sparse: no disk used) is refused from its size, before a byte is read (it took 3 min 47 s).
    Every read of the file the reader opens is counted: none may happen."""
    import builtins

    path = tmp_path / "huge.csv"
    with open(path, "wb") as handle:
        handle.write(HEADER.encode())
        handle.truncate(200 * 10**6)
    reads = []
    monkeypatch.setattr(_input_files(), "open", lambda *args, **kwargs: _CountingFile(
        builtins.open(*args, **kwargs), reads), raising=False)
    with pytest.raises(InputError) as raised:
        validation.read_table(str(path))
    assert reads == []
    message = str(raised.value)
    assert str(path) in message and "190.7 MiB" in message and "at most 32 MiB" in message
    assert _input_files().MAX_DATA_BYTES == 32 * 2**20


def test_a_config_file_over_its_limit_is_refused(tmp_path):
    from jaxschools.app import config

    path = tmp_path / "big.toml"
    path.write_text("# x\n" * (2**20 // 4 + 1))
    with pytest.raises(InputError, match=r"big\.toml: the file is 1\.0 MiB.*a config file may hold at most 1 MiB"):
        config.load_config(str(path))


def _run_child(script: str, timeout: int, what: str) -> subprocess.CompletedProcess:
    """``script`` in a fresh interpreter (it sets its own memory limit) with a timeout; it must exit 0."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    try:
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{what} within {timeout} s")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


DEV_ZERO_CHILD = """
import resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30))
from jaxschools.app import config
from jaxschools.core import validation
from jaxschools.errors import InputError
start = time.perf_counter()
for read in (validation.read_table, config.load_config):
    try:
        read("/dev/zero")
    except InputError as error:
        print(error)
print(time.perf_counter() - start)
"""


def test_dev_zero_is_refused_after_the_limit_in_bounded_time_and_memory():
    """/dev/zero never ends: read up to the limit (32 MiB for data, 1 MiB for a config), then refused. In a
    child under a 2 GiB address-space limit and a timeout, as it was read without end (a MemoryError)."""
    proc = _run_child(DEV_ZERO_CHILD, 60, "reading /dev/zero did not stop")
    data, config, _seconds = proc.stdout.splitlines()
    assert data.startswith("/dev/zero: more than 32 MiB read from it without reaching its end; a data file")
    assert config.startswith("/dev/zero: more than 1 MiB read from it without reaching its end; a config file")


def _fifo_writer(path, text, hold):
    """Write ``text`` into the FIFO at ``path``, then keep it open until ``hold`` is set."""

    def write():
        with open(path, "w") as handle:
            handle.write(text)
            handle.flush()
            hold.wait(10)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


def test_a_bad_row_in_a_pipe_is_reported_before_the_pipe_ends(tmp_path):
    """Streamed validation, shown without timing: the writer keeps the pipe open after a bad second row, so
    the error can only come before the end of the input if the rows are checked as they are read."""
    path = tmp_path / "pipe.csv"
    os.mkfifo(path)
    hold = threading.Event()
    thread = _fifo_writer(path, HEADER + "A,1,2\nB,high,2\n", hold)
    try:
        with pytest.raises(InputError, match=r"line 3, column 'y': 'high' is not a number"):
            validation.read_table(str(path))
        assert thread.is_alive()  # the writer still holds the pipe open: the input has not ended
    finally:
        hold.set()
        thread.join(5)


def test_a_good_table_from_a_pipe_is_read(tmp_path):
    path = tmp_path / "pipe"
    os.mkfifo(path)
    hold = threading.Event()
    hold.set()
    thread = _fifo_writer(path, HEADER + "A,1,2\nB,3,4\n", hold)
    table = validation.read_table(str(path))
    assert {key: table[key] for key in ("names", "y", "sigma")} == {"names": ["A", "B"], "y": [1.0, 3.0],
                                                                    "sigma": [2.0, 4.0]}
    thread.join(5)


def test_a_large_file_with_a_bad_last_row_is_refused_in_bounded_memory(tmp_path):
    """A bad last row after 40,000 good ones (0.8 MB). Before, the rows were all held as lists first (9 MB
    took 50 s and 264 MB, 26 times the file); now each row is checked as read and only its values kept."""
    import tracemalloc

    rows = 40_000
    path = tmp_path / "big.csv"
    lines = [HEADER] + [f"s{i},{i % 50 - 25}.5,{1 + i % 20}.25\n" for i in range(rows)] + ["last,1,0\n"]
    path.write_text("".join(lines))
    size = path.stat().st_size
    expected = rf"line {rows + 2}, column 'sigma': sigma must be positive"
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match=expected):
            validation.read_table(str(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # Each kept school costs its name (a Python string), its line in the index of names and 16 bytes of
    # numbers, about 150 bytes: several times its row's 17 bytes here, but never more than that (peak/size
    # was 26 before; a block being read adds a fixed few hundred KB).
    assert peak < 10 * size, (peak, size)


@pytest.mark.parametrize("block", [1, 2, 3, 7, 2**20])
def test_lines_are_split_and_decoded_as_a_whole_text_would_be(tmp_path, block, monkeypatch):
    """Blocks cut anywhere: the lines are those of io.StringIO(text, newline="") on the decoded text."""
    import io

    files = _input_files()
    monkeypatch.setattr(files, "_BLOCK", block)
    raw = "\ufeffname,y\r\nÉcole,1\rΣχολείο,2\n\"two\r\nlines\",3\n😀,4".encode()
    path = tmp_path / "d.csv"
    path.write_bytes(raw)
    with files.open_lines(str(path)) as lines:
        assert list(lines) == list(io.StringIO(raw.decode("utf-8-sig"), newline=""))
    path.write_bytes(raw + b"\n\xce\xa3\xff\n")
    # Lines counted by their line feeds, as before (the lone carriage return of line 2 does not count).
    expected = f"line 6: not UTF-8 text (byte 0xff at byte offset {len(raw) + 3})"
    with pytest.raises(InputError, match=re.escape(expected)):
        files.read_text(str(path))


# --- finding 8: control characters in school names ------------------------------------------------------------

REFUSED = {
    "nul": ("A\x00B", "U+0000 (NUL, a control character) at position 1"),
    "tab-inside": ("A\tB", "U+0009 (tab, a control character)"),
    "line-feed-in-quoted-cell": ("North\nSchool", "U+000A (line feed, a control character)"),
    "carriage-return-in-quoted-cell": ("North\rSchool", "U+000D (carriage return, a control character)"),
    "escape": ("A\x1b[31mB", "U+001B (a control character)"),
    "del": ("A\x7fB", "U+007F (DEL, a control character)"),
    "c1-next-line": ("A\x85B", "U+0085 (a control character)"),
    "line-separator": ("A\u2028B", "U+2028 (a line separator)"),
    "paragraph-separator": ("A\u2029B", "U+2029 (a paragraph separator)"),
    "right-to-left-override": ("A\u202eB", "U+202E (a bidirectional-text control)"),
    "isolate": ("A\u2066B", "U+2066 (a bidirectional-text control)"),
}
ACCEPTED = ["École Sainte-Anne", "Σχολείο", "学校 1", "no\u00a0break", "zero\u200cwidth", "👩\u200d🏫", "A's (1)"]


@pytest.mark.parametrize("key", list(REFUSED))
def test_csv_school_names_with_control_characters_are_refused_naming_line_and_column(tmp_path, key):
    name, fragment = REFUSED[key]
    path = tmp_path / "d.csv"
    quoted = '"' + name + '"'
    path.write_text(HEADER + "A,1,2\n" + f"{quoted},3,4\n", encoding="utf-8", newline="")
    with pytest.raises(InputError) as raised:
        validation.read_table(str(path))
    message = str(raised.value)
    assert message.startswith(f"{path}: line 3, column 'name': the school name ") and fragment in message
    assert "\n" not in message and "\r" not in message and "\x00" not in message  # one printable line


@pytest.mark.parametrize("key", list(REFUSED))
def test_json_and_python_school_names_with_control_characters_are_refused(tmp_path, key):
    import json

    name, fragment = REFUSED[key]
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"name": ["A", name], "y": [1, 2], "sigma": [1, 1]}), encoding="utf-8")
    with pytest.raises(InputError, match="school name at index 1 ") as raised:
        validation.read_table(str(path))
    assert fragment in str(raised.value)
    with pytest.raises(InputError, match="school name at index 1 "):
        validation.check_schools([1.0, 2.0], [1.0, 1.0], ["A", name])


def test_a_lone_surrogate_from_json_is_refused(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('{"name": ["A", "B\\ud800"], "y": [1, 2], "sigma": [1, 1]}', encoding="utf-8")
    with pytest.raises(InputError, match=r"U\+D800 \(a lone surrogate, not a character\)"):
        validation.read_table(str(path))


def test_printable_names_of_any_script_are_accepted_and_outer_tabs_stripped(tmp_path):
    path = tmp_path / "d.csv"
    rows = "".join(f'"{name}",{i},1\n' for i, name in enumerate(ACCEPTED))
    path.write_text(HEADER + rows + "\tpadded\t,9,1\n", encoding="utf-8")
    assert validation.read_table(str(path))["names"] == ACCEPTED + ["padded"]
    assert validation.check_schools(np.zeros(len(ACCEPTED)), np.ones(len(ACCEPTED)), ACCEPTED)[0] == tuple(ACCEPTED)


# --- finding 7: the added school's sigma, and the SBC band for many ranks --------------------------------------


def test_ess_per_second_of_a_cell_with_undefined_ess_is_none_not_a_type_error():
    """The add_school crash (experiments.py:345): a cell whose ESS is null divided None by the seconds."""
    from jaxschools.app import experiments

    rows = [{"ess": {"mu": 400.0, "log_tau": 200.0}}, {"ess": {"mu": None, "log_tau": 10.0}}]
    assert experiments._ess_per_second(rows, 2.0) == [{"mu": 200.0, "log_tau": 100.0}, None]
    assert experiments._ess_per_second(rows, float("nan")) == [None, None]


@pytest.mark.parametrize("value, accepted", [(1e-300, False), (1e-151, False), (1e151, False), (1e-150, True),
                                             (1e150, True), (10.0, True)])
def test_new_sigma_is_bounded_where_its_square_is_a_normal_float64(value, accepted):
    from jaxschools.app import config

    sets = ["sweep.kind=add_school", "sweep.values=[1.0]", f"sweep.new_sigma={value!r}"]
    if accepted:
        assert config.load_config(sets=sets)["sweep"]["new_sigma"] == value
        assert np.isfinite(value**2) and value**2 >= np.finfo(np.float64).tiny
    else:
        with pytest.raises(InputError, match=r"sweep\.new_sigma = .*from 1e-150 to 1e150"):
            config.load_config(sets=sets)


def test_num_ranks_beyond_the_draws_kept_is_refused():
    from jaxschools.app import config

    resolved = config.load_config(sets=["simulation.num_datasets=10", "simulation.num_ranks=1000000"])
    with pytest.raises(InputError, match=r"simulation\.num_ranks = 1000000 is more than the 8000 draws"):
        config.check_experiment(resolved, list("ABCDEFGH"))
    config.check_experiment(config.load_config(sets=["simulation.num_datasets=10", "simulation.num_ranks=8000"]),
                            list("ABCDEFGH"))


BAND_CHILD = """
import resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (4 * 2**30, 4 * 2**30))
from jaxschools.core import calibration
start = time.perf_counter()
for num_ranks, num_datasets in ((10**6, 100), (2**31 - 1, 1000)):
    z, lower, upper = calibration.ecdf_band(num_ranks, num_datasets, 0.01)
    assert len(z) == calibration.MAX_EVALUATION_POINTS and (lower <= upper).all()
print(time.perf_counter() - start)
"""


def test_ecdf_band_for_a_million_ranks_finishes_in_bounded_time():
    """num_ranks = 10^6 hung (2,000 x 10^6 simulated counts) and ignored SIGTERM; now a few seconds, for any
    L. In a child with a timeout and a 4 GiB memory limit of its own, so a regression fails here instead of
    hanging the suite or filling the machine's memory."""
    _run_child(BAND_CHILD, 90, "ecdf_band(10**6, ...) did not finish")


def _gamma_interval(points, num_ranks, n, lower, upper):
    """The pointwise levels gamma for which scipy's binomial quantiles give exactly this band: lower_i is the
    smallest k with P(X <= k) >= gamma / 2, upper_i the smallest with P(X <= k) >= 1 - gamma / 2."""
    z = points / (num_ranks + 1)
    cdf = lambda k: stats.binom.cdf(k, n, z)  # noqa: E731
    low = np.max(np.concatenate([2 * cdf(lower - 1), 2 * (1 - cdf(upper))]))
    high = np.min(np.concatenate([2 * cdf(lower), 2 * (1 - cdf(upper - 1))]))
    return low, high


@pytest.mark.parametrize("num_ranks, n", [(19, 200), (99, 50), (10**6, 100)])
def test_ecdf_band_is_a_central_binomial_band_of_one_level_at_every_point(num_ranks, n):
    """Oracle: scipy.stats.binom. One gamma must reproduce every point's lower and upper bound."""
    points = calibration.evaluation_points(num_ranks)  # first: without it, L = 10^6 would need 16 GB here
    z, lower, upper = calibration.ecdf_band(num_ranks, n, 0.05)
    np.testing.assert_array_equal(z, points / (num_ranks + 1))
    low, high = _gamma_interval(points, num_ranks, n, lower, upper)
    assert low < high * (1 + 1e-9), (low, high)
    assert 0.05 / len(points) / 4 < high and low < 0.05  # between Bonferroni and the pointwise level


@pytest.mark.parametrize("num_ranks", [19, 10**6])
def test_ecdf_band_holds_its_simultaneous_level_for_uniform_ranks(num_ranks):
    """Uniform ranks drawn here (numpy, another seed) and their ECDF counted here fall outside the band at
    most alpha of the time, up to the Monte Carlo error of the two estimates involved:

    * the rate measured here, from ``trials`` independent experiments: variance alpha (1 - alpha) / trials;
    * the band's own: its pointwise level is the alpha-quantile of S = ``calibration._BAND_SIMULATIONS``
      simulated worst tail probabilities, and the probability mass below an empirical alpha-quantile of S
      draws is Beta(alpha S, (1 - alpha) S + 1), variance ~ alpha (1 - alpha) / S.

    So outside <= alpha + 4 sqrt(alpha (1 - alpha) (1 / trials + 1 / S)) (0.075 for 600 trials and S =
    2,000). One-sided: the counts are integers, and discreteness can only make the band hold more often than
    its nominal level (a tie at the simulated quantile counts as inside); that the band is not needlessly
    wide is checked by its pointwise level staying above a Bonferroni one (the test above). Measured with
    20,000 trials: 0.205 outside for both L here."""
    alpha, trials, n = 0.2, 600, 100
    points = calibration.evaluation_points(num_ranks)
    _, lower, upper = calibration.ecdf_band(num_ranks, n, alpha)
    rng = np.random.default_rng(12345)
    ranks = rng.integers(0, num_ranks + 1, size=(trials, n))
    counts = (ranks[:, :, None] < points[None, None, :]).sum(axis=1)
    outside = np.mean(np.any((counts < lower) | (counts > upper), axis=1))
    margin = 4 * np.sqrt(alpha * (1 - alpha) * (1 / trials + 1 / calibration._BAND_SIMULATIONS))
    assert outside <= alpha + margin, (outside, alpha, margin)
    np.testing.assert_array_equal(calibration.ecdf_counts(ranks[0], num_ranks), counts[0])


def test_binomial_cdf_matches_scipy_for_small_and_huge_n():
    for n, p in [(0, 0.3), (1, 0.5), (10, 0.01), (200, 0.37), (5000, 1e-4), (37, 0.999), (10**6, 1e-6)]:
        np.testing.assert_allclose(calibration.binomial_cdf(n, p), stats.binom.cdf(np.arange(n + 1), n, p),
                                   rtol=0, atol=1e-12)
