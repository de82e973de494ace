"""A sweep's stored chunks are checked before they are reused (issue #13 finding 10).

A rerun reuses the chunks an interrupted run stored next to its output folder. A chunk file that is not
what the run itself would have written (random bytes, cut short, other arrays, other shapes, a pickle) is
never trusted: it is computed again, with a progress note, and the results equal a run without a store.
Through the command line: ``tests/test_sweep_resume.py`` damages a chunk of an interrupted sweep.
"""

import io
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxschools.app.experiments import ChunkStore, run_chunked

NUM_CELLS, CHUNK = 5, 2  # three chunks: two full, the last one cell


@jax.jit
def _cells(x):
    """A cell function with two outputs of different shapes and dtypes, vmapped over the leading axis."""
    return {"square": x**2, "stats": jnp.stack([jnp.sum(x, axis=-1), jnp.max(x, axis=-1)], axis=-1).astype(jnp.float32)}


def _inputs():
    return jnp.arange(NUM_CELLS * 3, dtype=jnp.float64).reshape(NUM_CELLS, 3)


def _expected():
    out = _cells(_inputs())
    return {key: np.asarray(value) for key, value in out.items()}


def _good_chunk_bytes(index):
    """The bytes a run stores for chunk ``index`` (so a test can damage a genuine file)."""
    out = _expected()
    start = index * CHUNK
    leaves = jax.tree_util.tree_leaves({key: value[start : start + CHUNK] for key, value in out.items()})
    buffer = io.BytesIO()
    np.savez(buffer, **{f"leaf{i}": leaf for i, leaf in enumerate(leaves)})
    return buffer.getvalue()


def _flipped(blob):
    """``blob`` with the bits of one stored number inverted (inside the first array's data, where only the
    zip's CRC-32 can tell)."""
    damaged = bytearray(blob)
    at = blob.index(_expected()["square"][0].tobytes())
    damaged[at : at + 8] = bytes(b ^ 0xFF for b in damaged[at : at + 8])
    return bytes(damaged)


def _npz(**arrays):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _pickled_npz():
    buffer = io.BytesIO()
    np.savez(buffer, leaf0=np.array([{"x": 1}], dtype=object), leaf1=np.zeros((2, 2), np.float32))
    return buffer.getvalue()


BAD_CHUNKS = {
    "random-bytes": lambda: np.random.default_rng(0).bytes(4096),
    "empty-file": lambda: b"",
    "truncated": lambda: _good_chunk_bytes(0)[:-40],
    "bit-flips-in-the-data": lambda: _flipped(_good_chunk_bytes(0)),
    "wrong-shape": lambda: _npz(leaf0=np.zeros((2, 3)), leaf1=np.zeros((3, 2), np.float32)),
    "wrong-dtype": lambda: _npz(leaf0=np.zeros((2, 3), np.float32), leaf1=np.zeros((2, 2), np.float32)),
    "too-few-arrays": lambda: _npz(leaf0=np.zeros((2, 3))),
    "other-array-names": lambda: _npz(a=np.zeros((2, 3)), b=np.zeros((2, 2), np.float32)),
    "pickled-objects": _pickled_npz,
    "a-zip-without-arrays": lambda: _zip_with_text(),
}


def _zip_with_text():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("leaf0.npy", "not an array")
        archive.writestr("leaf1.npy", "nor this")
    return buffer.getvalue()


@pytest.mark.parametrize("kind", list(BAD_CHUNKS))
def test_a_bad_chunk_is_recomputed_with_a_note(kind, tmp_path):
    store = ChunkStore(tmp_path / "store")
    run_chunked(_cells, _inputs(), NUM_CELLS, CHUNK, store=store, label="sweep")  # stores the three chunks
    (tmp_path / "store" / "sweep-00000.npz").write_bytes(BAD_CHUNKS[kind]())
    notes = []
    out, timing = run_chunked(_cells, _inputs(), NUM_CELLS, CHUNK, store=store, label="sweep", progress=notes.append)
    expected = _expected()
    for key in expected:
        np.testing.assert_array_equal(out[key], expected[key])
        assert out[key].dtype == expected[key].dtype
    assert timing["chunks_computed"] == 1 and timing["chunks_loaded"] == 2
    assert any("stored chunk 0 is unusable" in note and "computing it again" in note for note in notes), notes
    # The bad file was replaced by the recomputed chunk, which a third run loads.
    _, again = run_chunked(_cells, _inputs(), NUM_CELLS, CHUNK, store=store, label="sweep")
    assert again["chunks_loaded"] == 3 and again["chunks_computed"] == 0


def test_the_last_shorter_chunk_is_checked_against_its_own_size(tmp_path):
    store = ChunkStore(tmp_path / "store")
    run_chunked(_cells, _inputs(), NUM_CELLS, CHUNK, store=store, label="sweep")
    last = tmp_path / "store" / "sweep-00002.npz"
    # A full-size chunk where the last (one-cell) chunk belongs: its rows would be appended as extra cells.
    last.write_bytes(_npz(leaf0=np.zeros((2, 3)), leaf1=np.zeros((2, 2), np.float32)))
    out, timing = run_chunked(_cells, _inputs(), NUM_CELLS, CHUNK, store=store, label="sweep")
    assert out["square"].shape == (NUM_CELLS, 3) and timing["chunks_computed"] == 1
    np.testing.assert_array_equal(out["square"], _expected()["square"])


def test_load_raises_corrupt_chunk_and_none_when_absent(tmp_path):
    from jaxschools.app.experiments import CorruptChunk

    store = ChunkStore(tmp_path)
    like = {"square": jax.ShapeDtypeStruct((2, 3), jnp.float64), "stats": jax.ShapeDtypeStruct((2, 2), jnp.float32)}
    assert store.load("sweep", 0, like) is None
    (tmp_path / "sweep-00000.npz").write_bytes(b"\x00" * 100)
    with pytest.raises(CorruptChunk, match="unreadable"):
        store.load("sweep", 0, like)
