"""Reading the user's input files with a size limit, line by line, before any JAX is imported.

A data file or config file is read as a stream of lines, never more than its limit, so a huge file, or a
device such as ``/dev/zero`` that never ends, is refused with one line instead of filling memory:

* a regular file larger than its limit is refused at once, from its size, before a byte is read;
* anything else that can be opened (a pipe, ``--data <(...)`` process substitution, a character device) is
  read until the limit and refused as soon as it passes it; a directory is refused by name;
* the bytes are decoded as UTF-8 line by line (a byte-order mark is dropped), so the first bad byte is
  reported with its line and byte offset as soon as it is reached.

Limits: :data:`MAX_DATA_BYTES` for a data file, 32 MiB. A CSV row of a school is about 15 to 40 bytes, so
this is a million schools or so, thousands of times the largest published meta-analyses and beyond what a run
can hold in the memory of a large machine (``jaxschools.app.resources`` refuses such runs with its own estimate).
:data:`MAX_CONFIG_BYTES` for a config file, 1 MiB (the documented ``configs/default.toml`` is under 10 KB).
The limits are constants, not config keys: the config is read with one of them. Pure Python: the standard
library only.

Memory while reading: one block (:data:`_BLOCK`) and its decoded lines at a time; a CSV keeps only each good
row's name and numbers (about 150 bytes a school), a JSON or TOML file is parsed whole, within its limit.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat

from jaxschools.errors import InputError

__all__ = ["MAX_DATA_BYTES", "MAX_CONFIG_BYTES", "open_lines", "read_text"]

MAX_DATA_BYTES = 32 * 2**20
MAX_CONFIG_BYTES = 2**20

# Bytes read at a time: large enough that the per-block work is negligible, small enough that a block's
# decoded copies (io.StringIO holds 4 bytes a character) stay a fraction of a megabyte.
_BLOCK = 2**16


def _size(nbytes: int) -> str:
    if nbytes < 2**20:
        return f"{nbytes:,} bytes"
    mib = nbytes / 2**20
    return f"{mib:,.0f} MiB" if mib == int(mib) else f"{mib:,.1f} MiB"


def _too_large(path, what: str, limit: int, found: str) -> InputError:
    return InputError(f"{path}: {found}; a {what} may hold at most {_size(limit)} (is this the right file?)")


class _Limited(io.RawIOBase):
    """A raw binary stream that raises InputError once more than ``limit`` bytes have been read from it."""

    def __init__(self, raw, path, what: str, limit: int):
        super().__init__()
        self._raw, self._path, self._what, self._limit, self._count = raw, path, what, limit, 0

    def readable(self):
        return True

    def readinto(self, buffer):
        # Never ask for more than one byte past the limit: that byte is enough to know the limit is passed.
        view = memoryview(buffer)[: max(1, min(len(buffer), self._limit + 1 - self._count))]
        count = self._raw.readinto(view)
        self._count += count or 0
        if self._count > self._limit:
            raise _too_large(self._path, self._what, self._limit,
                             f"more than {_size(self._limit)} read from it without reaching its end")
        return count


def _open(path, what: str, limit: int):
    """The file at ``path`` opened for binary reading, its size checked; InputError naming the problem."""
    try:
        handle = open(path, "rb", buffering=0)  # noqa: SIM115 (closed by open_lines)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not a file") from None
    except ValueError:  # an embedded NUL: no file can have that name
        raise InputError(f"{path!r}: a file name cannot contain a NUL character") from None
    except OSError as error:
        raise InputError(f"{path}: cannot read the file ({error.strerror})") from None
    try:
        info = os.fstat(handle.fileno())
        if stat.S_ISDIR(info.st_mode):
            raise InputError(f"{path}: is a directory, not a file")
        if stat.S_ISREG(info.st_mode) and info.st_size > limit:
            raise _too_large(path, what, limit, f"the file is {_size(info.st_size)}")
    except BaseException:
        handle.close()
        raise
    return handle


@contextlib.contextmanager
def open_lines(path, what: str = "data file", limit: int = MAX_DATA_BYTES):
    """Context manager giving an iterator over the lines of the UTF-8 file at ``path``, line ends kept.

    Lines end at ``\\n``, ``\\r\\n`` or a lone ``\\r``, as ``io.StringIO(newline="")`` splits them, so the
    csv module reads them as it reads a whole text. At most ``limit`` bytes are read; raises InputError
    (naming ``path``) for a missing file, a directory, an unreadable file, a file over the limit and bytes
    that are not UTF-8 (with the line and byte offset of the first bad byte), each when it is reached.
    """
    handle = _open(path, what, limit)
    try:
        yield _lines(_Limited(handle, path, what, limit), path)
    finally:
        handle.close()


def _lines(stream, path):
    # Whole blocks cut after their last line feed: decoding and splitting a block are single C calls, and a
    # UTF-8 sequence never straddles a cut (a line feed byte is never part of one).
    pending, offset, lines_before, first = bytearray(), 0, 0, True
    while True:
        try:
            block = stream.read(_BLOCK)
        except OSError as error:
            raise InputError(f"{path}: cannot read the file ({error.strerror})") from None
        if block:
            cut = block.rfind(b"\n") + 1
            if cut == 0:  # no line end yet: a line longer than a block, read on
                pending += block
                continue
            chunk, pending = bytes(pending) + block[:cut], bytearray(block[cut:])
        elif pending:  # the last line, without a line end
            chunk, pending = bytes(pending), bytearray()
        else:
            return
        try:
            text = chunk.decode("utf-8")
        except UnicodeDecodeError as error:
            line = lines_before + chunk.count(b"\n", 0, error.start) + 1
            raise InputError(
                f"{path}: line {line}: not UTF-8 text (byte 0x{chunk[error.start]:02x} at byte offset "
                f"{offset + error.start}); save the file as UTF-8"
            ) from None
        if first:
            text, first = text.removeprefix("\ufeff"), False
        offset += len(chunk)
        lines_before += chunk.count(b"\n")
        yield from io.StringIO(text, newline="")
        if not block:
            return


def read_text(path, what: str = "data file", limit: int = MAX_DATA_BYTES) -> str:
    """The whole text of the UTF-8 file at ``path`` (at most ``limit`` bytes); errors as :func:`open_lines`."""
    with open_lines(path, what, limit) as lines:
        return "".join(lines)


def __dir__():
    # The public names only, not the imports (``dir(js.diagnostics)`` lists no ``jax`` or ``jnp``).
    return list(__all__)
