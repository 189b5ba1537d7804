"""Retrieve decodes the next chunk while the current one is sent (issue 12), in order, failures isolated."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from pacs_cae.archive import retrieve
from pacs_cae.archive.service import Archive
from pacs_cae.testing.factories import make_mr_series
from tests.archive.helpers import RecordingDecoder, refs_for, reread


def _lossy_series(archive: Archive, n: int = 5) -> tuple[list, list]:
    """``n`` slices stored and compressed; (the datasets sent, their refs in order)."""
    series = [reread(ds) for ds in make_mr_series(n, 64, 64)]
    for ds in series:
        archive.store(ds)
    assert archive.compress_pending().compressed == n
    return series, [ref for ds in series for ref in refs_for(archive, ds.SOPInstanceUID)]


def test_next_chunk_decodes_while_the_first_is_consumed(open_archive) -> None:
    archive: Archive = open_archive()
    series, refs = _lossy_series(archive)
    decoder = RecordingDecoder(archive.codecs)
    results = retrieve.load(refs, database=archive.database, decoder=decoder, chunk_size=2, first_chunk=1)
    first_ref, first = next(results)
    # the consumer holds the first instance; the producer goes on with the next chunk meanwhile
    assert decoder.second_call.wait(60), "the second chunk was not decoded while the first was consumed"
    rest = list(results)
    assert [r for r, _ in [(first_ref, first), *rest]] == refs  # in order
    assert all(not isinstance(ds, Exception) for _, ds in [(first_ref, first), *rest])
    assert [n for _, n in decoder.calls] == [1, 2, 2]  # one batched codec call per chunk
    assert {name.split("_")[0] for name, _ in decoder.calls} == {"retrieve-decode"}
    served = {str(ds.SourceImageSequence[0].ReferencedSOPInstanceUID): ds for _, ds in [(first_ref, first), *rest]}
    assert set(served) == {str(ds.SOPInstanceUID) for ds in series}


def test_the_codec_runs_two_chunks_ahead_and_the_consumer_rebuilds(open_archive, monkeypatch) -> None:
    """While the caller holds the first instance, the next two chunks are decoded (the codec is never left
    waiting for a chunk to be rebuilt and sent); rebuilding happens on the caller's thread."""
    archive: Archive = open_archive()
    _, refs = _lossy_series(archive)
    decoder = RecordingDecoder(archive.codecs)
    rebuilt_on: set[str] = set()
    real_rebuild = retrieve.rebuild
    monkeypatch.setattr(retrieve, "rebuild", lambda *a: rebuilt_on.add(threading.current_thread().name)
                        or real_rebuild(*a))
    results = retrieve.load(refs, database=archive.database, decoder=decoder, chunk_size=2, first_chunk=1)
    next(results)
    assert decoder.third_call.wait(60), "the third chunk was not decoded while the first was consumed"
    assert len(list(results)) == 4
    assert rebuilt_on == {threading.current_thread().name}


def test_a_damaged_blob_fails_alone_across_chunks(open_archive) -> None:
    archive: Archive = open_archive()
    series = [reread(ds) for ds in make_mr_series(4, 64, 64)]
    for ds in series:
        archive.store(ds)
    archive.compress_pending()
    refs = [ref for ds in series for ref in refs_for(archive, ds.SOPInstanceUID)]

    class Failing:
        def decode(self, blobs: Sequence[bytes]) -> list[np.ndarray]:
            if len(blobs) == 1 and blobs[0] == damaged:
                raise ValueError("damaged")
            if any(b == damaged for b in blobs):
                raise ValueError("batch with a damaged blob")
            return archive.codecs.decode(blobs)

    from sqlalchemy import select

    from pacs_cae.store.schema import InstanceBlob
    with archive.database.session(readonly=True) as session:
        damaged = session.scalar(select(InstanceBlob.pixel_blob).where(InstanceBlob.instance_pk == refs[2].id))
    out = list(retrieve.load(refs, database=archive.database, decoder=Failing(), chunk_size=2, first_chunk=2))
    assert [r for r, _ in out] == refs
    assert [isinstance(ds, Exception) for _, ds in out] == [False, False, True, False]


def test_a_series_compressed_during_a_retrieve_comes_back_all_original(open_archive) -> None:
    """One snapshot for the whole retrieve: a swap between two chunks must not mix originals and lossy copies
    in one answer (a viewer would show a mixed series)."""
    archive: Archive = open_archive()
    series = [reread(ds) for ds in make_mr_series(6, 64, 64)]
    for ds in series:
        archive.store(ds)
    refs = [ref for ds in series for ref in refs_for(archive, ds.SOPInstanceUID)]
    results = retrieve.load(refs, database=archive.database, decoder=archive.codecs, chunk_size=2, first_chunk=1)
    first = [next(results)]
    assert archive.compress_pending().compressed == 6  # the series is swapped while the answer is under way
    answer = [ds for _, ds in [*first, *results]]
    assert all(not isinstance(ds, Exception) for ds in answer)
    assert [str(ds.SOPInstanceUID) for ds in answer] == [str(ds.SOPInstanceUID) for ds in series]
    assert all("LossyImageCompression" not in ds for ds in answer)
