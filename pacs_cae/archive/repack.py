"""Re-encode the pixel blobs C-STORE wrote verbatim, for series no compression rule will judge.

The C-STORE fast path (:mod:`pacs_cae.archive.ingest`) stores the Pixel Data of an instance that gets a
compression job as received (:func:`pacs_cae.codec.lossless.store_verbatim`: a CRC, no codec), so the modality
never waits for JPEG-LS. A worker that claims a series no rule compresses (a ``LOSSLESS_JOB``, or a job whose
rule has gone) calls :func:`repack`: every verbatim blob becomes the smallest verified coding of
``codec.lossless_methods`` (else Brotli). That is its final form, and a blob that is no longer verbatim is never
picked again (what makes a second run a no-op). Series a codec judges are not repacked first: a slice that goes
lossy never needs its lossless coding, and one that stays lossless gets it with the decision
(:mod:`pacs_cae.archive.compression`).

One transaction per series; an instance is rewritten only when it is still the lossless copy that was read
(same ``received_at`` and blob size, under its row lock), so a concurrent re-send or swap wins and a repack
run twice changes nothing.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

from pydicom.uid import UID
from sqlalchemy import select
from sqlalchemy.orm import Session

from pacs_cae.codec.lossless import FAST_METHODS, PixelLayout, decode_lossless, encode_lossless, is_verbatim
from pacs_cae.store.db import Database
from pacs_cae.store.schema import Instance, InstanceBlob

LOG = logging.getLogger(__name__)


def layout_of(inst: Instance) -> PixelLayout | None:
    """The native pixel layout from the index columns (None: encapsulated or unknown, Brotli then).

    Only a hint for the encoder: :func:`encode_lossless` verifies its JPEG-LS round trip and keeps every byte.
    """
    try:
        if UID(inst.transfer_syntax_uid or "").is_encapsulated:
            return None
        samples = 1 if str(inst.photometric_interpretation or "").startswith("MONOCHROME") else 3
        return PixelLayout(rows=int(inst.rows or 0), columns=int(inst.columns or 0),
                           bits_allocated=int(inst.bits_allocated or 0),
                           pixel_representation=int(inst.pixel_representation or 0),
                           samples_per_pixel=samples, frames=int(inst.number_of_frames or 1))
    except (TypeError, ValueError):
        return None


def repack(database: Database, series_pks: Sequence[int], *, brotli_quality: int = 5,
           methods: Sequence[str] = FAST_METHODS) -> int:
    """Re-encode the verbatim blobs of these series in the smallest verified coding of ``methods``; returns how
    many instances were rewritten."""
    if not series_pks:
        return 0
    with database.session(readonly=True) as session:
        # verbatim blobs are the only lossless blobs larger than the pixel data they hold
        candidates = session.execute(
            select(Instance, InstanceBlob.pixel_blob)
            .join(InstanceBlob, InstanceBlob.instance_pk == Instance.id)
            .where(Instance.series_pk.in_(list(series_pks)), Instance.storage == "lossless",
                   Instance.stored_pixel_bytes > Instance.original_pixel_bytes)
        ).all()
    by_series: dict[int, list[tuple[int, datetime, int, bytes]]] = defaultdict(list)
    for inst, blob in candidates:
        if blob is None or not is_verbatim(blob):
            continue
        encoded = encode_lossless(decode_lossless(blob), layout_of(inst), brotli_quality=brotli_quality,
                                  methods=methods)
        if len(encoded) < len(blob):
            by_series[inst.series_pk].append((inst.id, inst.received_at, len(blob), encoded))
    rewritten = 0
    for series_pk, items in by_series.items():
        with database.session() as session:
            rewritten += _swap(session, items)
        LOG.debug("series %d: %d verbatim pixel blob(s) re-encoded losslessly", series_pk, len(items))
    return rewritten


def _swap(session: Session, items: list[tuple[int, datetime, int, bytes]]) -> int:
    ids = sorted(i for i, *_ in items)
    rows = {inst.id: inst for inst in session.scalars(
        select(Instance).where(Instance.id.in_(ids)).order_by(Instance.id).with_for_update())}
    done = 0
    for instance_pk, received_at, size, encoded in items:
        inst = rows.get(instance_pk)
        if (inst is None or inst.storage != "lossless" or inst.received_at != received_at
                or inst.stored_pixel_bytes != size):
            continue  # re-sent, swapped or repacked meanwhile: that version wins
        blob = session.get(InstanceBlob, instance_pk)
        if blob is None:
            continue
        blob.pixel_blob = encoded
        inst.stored_pixel_bytes = len(encoded)
        done += 1
    return done


__all__ = ["layout_of", "repack"]
