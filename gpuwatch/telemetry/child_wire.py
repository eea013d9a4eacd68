"""The NVML child's wire: length-prefixed pickles over a socket pair, parent <-> child.

Why not ``multiprocessing.connection``: importing it pulls in ``hmac``/``hashlib`` (libcrypto, ~3 MiB
resident), ``tempfile``, ``multiprocessing.context`` and more into a child whose only job is reading
NVML; the framing it gives is all this needs. Both ends are ours (a private socket pair), so pickle is
safe here; messages are bounded by what the parent accepts, so a broken child cannot make it buffer
without limit.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

# The C pickler that pickle.dumps/loads run on CPython, imported without pickle.py's pure-Python one
# beside it (~0.3 MiB resident in the NVML child, which needs nothing else of pickle.py).
try:
    from _pickle import dumps, loads
except ImportError:  # pragma: no cover - an interpreter without the accelerator
    from pickle import dumps, loads

_HEADER = struct.Struct("!I")
#: largest message the parent accepts (a 64-GPU snapshot pickles to well under 1 MiB)
MAX_MESSAGE_BYTES = 64 * 2**20


class Channel:
    """One end of the socket pair: ``send``/``recv`` whole messages; ``fileno`` for ``select``.

    ``recv`` raises EOFError when the other end has gone (or sent a frame larger than the bound).
    Sends may come from one thread while another receives; concurrent senders need their own lock.
    """

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(True)
        self._sock = sock

    @classmethod
    def from_fd(cls, fd: int) -> Channel:
        return cls(socket.socket(fileno=fd))

    def fileno(self) -> int:
        return self._sock.fileno()

    def send(self, message: Any) -> None:
        data = dumps(message, protocol=-1)  # -1: the highest protocol
        self._sock.sendall(_HEADER.pack(len(data)) + data)

    def recv(self) -> Any:
        (size,) = _HEADER.unpack(self._read_exact(_HEADER.size))
        if size > MAX_MESSAGE_BYTES:
            raise EOFError(f"message of {size} bytes exceeds {MAX_MESSAGE_BYTES}")
        return loads(self._read_exact(size))

    def _read_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self._sock.recv(min(n - len(buf), 1 << 20))
            if not chunk:
                raise EOFError("the other end closed the channel")
            buf += chunk
        return bytes(buf)

    def close(self) -> None:
        self._sock.close()
