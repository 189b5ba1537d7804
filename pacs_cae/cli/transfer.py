"""``pacs-cae import`` and ``pacs-cae export``: files in and out of the archive without a network.

Both go through the same :class:`pacs_cae.archive.Archive` use cases as the DICOM services: ``import``
stores each file exactly as a C-STORE would (policy, codec, quality gate, duplicate policy), and ``export``
writes what a C-GET of the same entities would deliver (CAE instances as their declared lossy copies).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from pacs_cae.cli.app import app
from pacs_cae.cli.options import (
    ConfigOption,
    DatabaseUrlOption,
    DeviceOption,
    configure_logging,
    fail,
    load_or_exit,
    require_archive,
    user_errors,
)

IMPORT_AET = "PACSCAE-IMPORT"


def _open(command: str, settings: Any, *, verbose: bool = False) -> Any:
    """The archive, logging only errors unless ``verbose`` (the summary line says what happened)."""
    from pacs_cae.archive.service import Archive

    level = settings.log_level if verbose else logging.ERROR
    configure_logging(level)
    logging.getLogger("pydicom").setLevel(level)  # pydicom sets its own WARNING level
    with user_errors(command):
        return Archive.open(settings)


def iter_files(paths: list[Path]) -> Iterator[Path]:
    """Every file named, and every file below every folder named, in a stable order."""
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file())
        else:
            yield path


@app.command("import")
def import_files(
    paths: Annotated[list[Path], typer.Argument(
        exists=True, help="DICOM files and/or folders (searched recursively).")],
    config: ConfigOption = None,
    database_url: DatabaseUrlOption = None,
    model: Annotated[str | None, typer.Option(help="Codec model id for new instances (codec.model).")] = None,
    device: DeviceOption = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every stored instance.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Store DICOM files in the archive as if they had arrived by C-STORE."""
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from pacs_cae.archive.errors import ArchiveError

    settings = load_or_exit("import", config, database_url=database_url, model=model, device=device)
    files = list(iter_files(paths))
    archive = _open("import", settings, verbose=verbose)
    counts: Counter[str] = Counter()
    problems: list[dict[str, str]] = []
    columns = (TextColumn("importing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    try:
        # the bar goes to stderr and only to a terminal: stdout keeps the one summary line for scripts
        bar = Console(stderr=True)
        with user_errors("import"), Progress(*columns, console=bar, transient=True,
                                             disable=as_json or not bar.is_terminal) as progress:
            task = progress.add_task("import", total=len(files))
            for path in files:
                progress.advance(task)
                try:
                    ds = dcmread(path)
                except (InvalidDicomError, OSError, EOFError, ValueError) as exc:
                    counts["skipped"] += 1
                    problems.append({"path": str(path), "result": "skipped", "reason": f"not DICOM: {exc}"})
                    continue
                try:
                    outcome = archive.store(ds, calling_aet=IMPORT_AET)
                except ArchiveError as exc:
                    counts["failed"] += 1
                    problems.append({"path": str(path), "result": "failed", "reason": str(exc)})
                    continue
                counts[outcome.result] += 1
                counts[outcome.storage] += 1
                if outcome.compression_rule:
                    counts["queued"] += 1
    finally:
        archive.close()
    summary = {key: counts[key] for key in ("stored", "replaced", "kept-first", "identical", "lossless", "queued",
                                            "none", "skipped", "failed")}
    if as_json:
        typer.echo(json.dumps({**summary, "files": len(files), "problems": problems}, indent=2, sort_keys=True))
    else:
        for problem in problems:
            typer.echo(f"{problem['result']:<7} {problem['path']}: {problem['reason']}", err=True)
        stored = counts["stored"] + counts["replaced"]
        typer.echo(
            f"imported {stored} of {len(files)} files ({counts['stored']} new, {counts['replaced']} replaced, "
            f"{counts['kept-first'] + counts['identical']} already archived and kept); "
            f"lossless {counts['lossless']} ({counts['queued']} queued for compression: `pacs-cae worker`), "
            f"no pixels {counts['none']}; skipped {counts['skipped']}, failed {counts['failed']}"
        )
    if counts["failed"]:
        raise typer.Exit(1)


def _identifiers(archive: Any, study: list[str], patient: list[str], everything: bool) -> Iterator[tuple[str, Any]]:
    """(query model, retrieve identifier) pairs naming what to export."""
    import warnings

    from pydicom.dataset import Dataset

    from pacs_cae.vocabulary import QueryModel

    warnings.filterwarnings("ignore", message="Invalid value for VR")  # a bad UID simply matches nothing

    for uid in study:
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.StudyInstanceUID = uid
        yield QueryModel.STUDY_ROOT, ds
    for patient_id in patient:
        ds = Dataset()
        ds.QueryRetrieveLevel = "PATIENT"
        ds.PatientID = patient_id
        yield QueryModel.PATIENT_ROOT, ds
    if everything:
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = ""
        uids = [str(match.StudyInstanceUID) for match in archive.find(QueryModel.STUDY_ROOT, query)]
        for uid in uids:
            ds = Dataset()
            ds.QueryRetrieveLevel = "STUDY"
            ds.StudyInstanceUID = uid
            yield QueryModel.STUDY_ROOT, ds


def export_path(outdir: Path, ds: Any) -> Path:
    """``OUTDIR/<study UID>/<series UID>/<SOP Instance UID>.dcm`` (UIDs are safe file names)."""
    return outdir / str(ds.StudyInstanceUID) / str(ds.SeriesInstanceUID) / f"{ds.SOPInstanceUID}.dcm"


@app.command("export")
def export_files(
    outdir: Annotated[Path, typer.Argument(file_okay=False, help="Folder to write the .dcm files into.")],
    study: Annotated[list[str] | None, typer.Option("--study", help="Study Instance UID (repeatable).")] = None,
    patient: Annotated[list[str] | None, typer.Option("--patient", help="Patient ID (repeatable).")] = None,
    everything: Annotated[bool, typer.Option("--all", help="Every study in the archive.")] = False,
    config: ConfigOption = None,
    database_url: DatabaseUrlOption = None,
    device: DeviceOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Write what a C-GET would deliver for the named studies/patients as DICOM Part 10 files."""
    from pydicom.dataset import Dataset

    from pacs_cae.archive.errors import ArchiveError

    study, patient = study or [], patient or []
    if not (study or patient or everything):
        fail("export", "name --study UID, --patient ID or --all", 2)
    settings = load_or_exit("export", config, database_url=database_url, device=device)
    require_archive("export", settings)
    archive = _open("export", settings)
    written: list[str] = []
    failures: list[dict[str, str]] = []
    unmatched: list[str] = []
    seen: set[int] = set()
    try:
        with user_errors("export"):
            for model, identifier in _identifiers(archive, study, patient, everything):
                try:
                    found = archive.locate(model, identifier)
                except ArchiveError as exc:
                    fail("export", str(exc))
                if not found:
                    level = str(identifier.QueryRetrieveLevel)
                    unmatched.append(f"{'patient' if level == 'PATIENT' else 'study'} "
                                     f"{identifier.get('PatientID') or identifier.get('StudyInstanceUID')}")
                refs = [r for r in found if r.id not in seen]
                seen.update(r.id for r in refs)
                for ref, result in archive.load(refs):
                    if not isinstance(result, Dataset):
                        failures.append({"sop_instance_uid": ref.sop_instance_uid, "reason": str(result)})
                        continue
                    path = export_path(outdir, result)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    result.save_as(path, enforce_file_format=True)
                    written.append(str(path))
    finally:
        archive.close()
    if as_json:
        typer.echo(json.dumps({"exported": len(written), "outdir": str(outdir), "failed": failures,
                               "not_in_archive": unmatched}, indent=2, sort_keys=True))
    else:
        for failure in failures:
            typer.echo(f"failed  {failure['sop_instance_uid']}: {failure['reason']}", err=True)
        for name in unmatched:
            typer.echo(f"pacs-cae export: no {name} in the archive", err=True)
        if not written and not failures and not unmatched:
            typer.echo("pacs-cae export: the archive holds no studies", err=True)
        typer.echo(f"exported {len(written)} instances to {outdir}" + (f" ({len(failures)} failed)" if failures else ""))
    if failures or unmatched or not written:
        raise typer.Exit(1)
