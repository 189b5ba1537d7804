"""``pacs-cae import`` and ``pacs-cae export``: files in and out of the archive without a network.

Both go through the same :class:`pacs_cae.archive.Archive` use cases as the DICOM services: ``import``
stores each file exactly as a C-STORE would (policy, codec, quality gate, duplicate policy), and ``export``
writes what a C-GET of the same entities would deliver (CAE instances as their declared lossy copies).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import typer

from pacs_cae.cli.app import app
from pacs_cae.cli.options import load_or_exit

IMPORT_AET = "PACSCAE-IMPORT"


def _open(command: str, settings: Any) -> Any:
    from pacs_cae.archive.service import Archive

    logging.basicConfig(level=settings.log_level, format="%(levelname)-7s %(name)s: %(message)s")
    try:
        return Archive.open(settings)
    except Exception as exc:  # schema out of date, model missing, database unreachable
        typer.echo(f"pacs-cae {command}: cannot open the archive: {exc}", err=True)
        raise typer.Exit(1) from None


def iter_files(paths: list[Path]) -> Iterator[Path]:
    """Every file named, and every file below every folder named, in a stable order."""
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file())
        else:
            yield path


@app.command("import")
def import_files(
    paths: list[Path] = typer.Argument(..., exists=True, help="DICOM files and/or folders (searched recursively)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML configuration file."),
    database_url: Optional[str] = typer.Option(None, "--database-url", help="SQLAlchemy URL (database.url)."),
    model: Optional[str] = typer.Option(None, help="Codec model id for new instances (codec.model)."),
    device: Optional[str] = typer.Option(None, help="Codec device: auto, cpu, cuda (codec.device)."),
) -> None:
    """Store DICOM files in the archive as if they had arrived by C-STORE."""
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    from pacs_cae.archive.errors import ArchiveError

    settings = load_or_exit("import", config, database_url=database_url, model=model, device=device)
    archive = _open("import", settings)
    counts: Counter[str] = Counter()
    try:
        for path in iter_files(paths):
            try:
                ds = dcmread(path)
            except (InvalidDicomError, OSError, EOFError, ValueError) as exc:
                counts["skipped"] += 1
                typer.echo(f"skipped {path}: not a readable DICOM file ({exc})", err=True)
                continue
            try:
                outcome = archive.store(ds, calling_aet=IMPORT_AET)
            except ArchiveError as exc:
                counts["failed"] += 1
                typer.echo(f"failed  {path}: {exc}", err=True)
                continue
            counts[outcome.result] += 1
            counts[outcome.storage] += 1
            if outcome.compression_rule:
                counts["queued"] += 1
    finally:
        archive.close()
    stored = counts["stored"] + counts["replaced"]
    typer.echo(
        f"imported {stored} instances ({counts['stored']} new, {counts['replaced']} replaced, "
        f"{counts['kept-first']} already archived and kept); lossless {counts['lossless']} "
        f"({counts['queued']} queued for compression: `pacs-cae worker`), no pixels {counts['none']}; "
        f"skipped {counts['skipped']}, failed {counts['failed']}"
    )
    if counts["failed"]:
        raise typer.Exit(1)


def _identifiers(archive: Any, study: list[str], patient: list[str], everything: bool) -> Iterator[tuple[str, Any]]:
    """(query model, retrieve identifier) pairs naming what to export."""
    from pydicom.dataset import Dataset

    for uid in study:
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.StudyInstanceUID = uid
        yield "S", ds
    for patient_id in patient:
        ds = Dataset()
        ds.QueryRetrieveLevel = "PATIENT"
        ds.PatientID = patient_id
        yield "P", ds
    if everything:
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = ""
        uids = [str(match.StudyInstanceUID) for match in archive.find("S", query)]
        for uid in uids:
            ds = Dataset()
            ds.QueryRetrieveLevel = "STUDY"
            ds.StudyInstanceUID = uid
            yield "S", ds


def export_path(outdir: Path, ds: Any) -> Path:
    """``OUTDIR/<study UID>/<series UID>/<SOP Instance UID>.dcm`` (UIDs are safe file names)."""
    return outdir / str(ds.StudyInstanceUID) / str(ds.SeriesInstanceUID) / f"{ds.SOPInstanceUID}.dcm"


@app.command("export")
def export_files(
    outdir: Path = typer.Argument(..., file_okay=False, help="Folder to write the .dcm files into."),
    study: list[str] = typer.Option([], "--study", help="Study Instance UID (repeatable)."),
    patient: list[str] = typer.Option([], "--patient", help="Patient ID (repeatable)."),
    everything: bool = typer.Option(False, "--all", help="Every study in the archive."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML configuration file."),
    database_url: Optional[str] = typer.Option(None, "--database-url", help="SQLAlchemy URL (database.url)."),
    device: Optional[str] = typer.Option(None, help="Codec device: auto, cpu, cuda (codec.device)."),
) -> None:
    """Write what a C-GET would deliver for the named studies/patients as DICOM Part 10 files."""
    from pydicom.dataset import Dataset

    from pacs_cae.archive.errors import ArchiveError

    if not (study or patient or everything):
        typer.echo("pacs-cae export: name --study UID, --patient ID or --all", err=True)
        raise typer.Exit(2)
    settings = load_or_exit("export", config, database_url=database_url, device=device)
    archive = _open("export", settings)
    written = failed = 0
    seen: set[int] = set()
    try:
        for model, identifier in _identifiers(archive, study, patient, everything):
            try:
                refs = [r for r in archive.locate(model, identifier) if r.id not in seen]
            except ArchiveError as exc:
                typer.echo(f"pacs-cae export: {exc}", err=True)
                raise typer.Exit(1) from None
            seen.update(r.id for r in refs)
            for ref, result in archive.load(refs):
                if not isinstance(result, Dataset):
                    failed += 1
                    typer.echo(f"failed  {ref.sop_instance_uid}: {result}", err=True)
                    continue
                path = export_path(outdir, result)
                path.parent.mkdir(parents=True, exist_ok=True)
                result.save_as(path, enforce_file_format=True)
                written += 1
    finally:
        archive.close()
    typer.echo(f"exported {written} instances to {outdir}" + (f" ({failed} failed)" if failed else ""))
    if failed or not written:
        raise typer.Exit(1)
