"""``BatchingCodec``: one worker thread that merges encode/decode requests from many threads into batches.

pynetdicom serves each association on its own thread; sending every slice to the network alone wastes a GPU
(and CPU vector units). Callers block on their request while the worker collects whatever arrives within
``max_wait_ms`` (up to ``max_batch`` slices) and runs it as one call. A failing merged call is retried request
by request, so one caller's corrupt blob never fails another caller's request.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Self

import numpy as np
import torch

from .base import PerSlice, SliceCodec
from .engine import _per_item
from .errors import CodecError

if TYPE_CHECKING:
    from .weights import ModelCard


@dataclass
class _Request:
    kind: str  # "encode" | "decode"
    items: list[Any]
    bits: list[int | None]
    qualities: list[int | None] = field(default_factory=list)
    future: Future = field(default_factory=Future)


_STOP = object()


class BatchingCodec:
    """A :class:`~pacs_cae.codec.base.SliceCodec` over another one; safe to call from any number of threads."""

    def __init__(self, codec: SliceCodec, max_batch: int = 8, max_wait_ms: float = 2.0) -> None:
        if max_batch < 1 or max_wait_ms < 0:
            raise ValueError("max_batch must be >= 1 and max_wait_ms >= 0")
        self.codec = codec
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self._queue: queue.Queue[Any] = queue.Queue()
        self._closed = False
        self._close_lock = threading.Lock()
        self._worker = threading.Thread(target=self._loop, name="codec-batcher", daemon=True)
        self._worker.start()

    # Attributes callers read from a Codec, passed through.
    @property
    def model_id(self) -> str:
        return self.codec.model_id

    @property
    def weights_sha256(self) -> str:
        return self.codec.weights_sha256

    @property
    def device(self) -> torch.device:
        return self.codec.device

    @property
    def card(self) -> ModelCard | None:
        return self.codec.card

    @property
    def qualities(self) -> int | None:
        return self.codec.qualities

    @property
    def supports_max_abs_error(self) -> bool:
        return self.codec.supports_max_abs_error

    def check_max_abs_error(self, delta: int | None) -> int | None:
        return self.codec.check_max_abs_error(delta)

    def encode(
        self,
        slices: Sequence[np.ndarray],
        *,
        bits_stored: PerSlice = None,
        quality: PerSlice = None,
        max_abs_error: PerSlice = None,
    ) -> list[bytes]:
        """Like ``Codec.encode``; blocks until this request's batch has run.

        A bounded request (``max_abs_error``) goes straight to the codec: the bounded path codes one slice at a
        time (its bytes do not depend on batching), so merging requests would gain nothing.
        """
        if max_abs_error is not None:
            return self.codec.encode(slices, bits_stored=bits_stored, quality=quality,
                                     max_abs_error=max_abs_error)
        bits = _per_item(bits_stored, len(slices))
        return self._submit(_Request("encode", list(slices), bits, _per_item(quality, len(slices))))

    def decode(self, blobs: Sequence[bytes]) -> list[np.ndarray]:
        """Like ``Codec.decode``; blocks until this request's batch has run."""
        return self._submit(_Request("decode", list(blobs), []))

    def close(self) -> None:
        """Finish queued requests, then stop the worker. Later calls raise ``CodecError``."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._worker.join()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _submit(self, request: _Request) -> Any:
        if not request.items:
            return []
        with self._close_lock:
            if self._closed:
                raise CodecError("BatchingCodec is closed")
            self._queue.put(request)
        return request.future.result()

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            requests, stop = self._collect(first)
            for kind in ("encode", "decode"):
                group = [r for r in requests if r.kind == kind]
                if group:
                    self._run(group)
            if stop:
                return

    def _collect(self, first: _Request) -> tuple[list[_Request], bool]:
        """Gather requests arriving within ``max_wait`` until ``max_batch`` slices are queued."""
        requests, count = [first], len(first.items)
        deadline = time.monotonic() + self.max_wait
        while count < self.max_batch:
            timeout = deadline - time.monotonic()
            try:
                nxt = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if nxt is _STOP:
                return requests, True
            requests.append(nxt)
            count += len(nxt.items)
        return requests, False

    def _run(self, group: list[_Request]) -> None:
        try:
            items = [x for r in group for x in r.items]
            results = self._call(group[0].kind, items, [b for r in group for b in r.bits],
                                 [q for r in group for q in r.qualities])
        except Exception as exc:  # noqa: BLE001 - handed to the waiting callers
            if len(group) == 1:
                group[0].future.set_exception(exc)
            else:
                for request in group:
                    self._run([request])
            return
        start = 0
        for request in group:
            request.future.set_result(results[start : start + len(request.items)])
            start += len(request.items)

    def _call(self, kind: str, items: list[Any], bits: list[int | None], qualities: list[int | None]) -> list[Any]:
        if kind == "encode":
            if any(q is not None for q in qualities):
                return self.codec.encode(items, bits_stored=bits, quality=qualities)
            return self.codec.encode(items, bits_stored=bits)
        return self.codec.decode(items)
