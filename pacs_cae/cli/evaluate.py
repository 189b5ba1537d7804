"""``pacs-cae evaluate``: the learned codec's operating points vs standard codecs on the same slices, BD-rates."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from pacs_cae.archive.service import NO_MODEL
from pacs_cae.cli.app import app
from pacs_cae.cli.options import ConfigOption, DatabaseUrlOption, ModelsDirOption, load_or_exit, require_extra


@app.command()
def evaluate(
    sources: Annotated[list[Path] | None, typer.Argument(
        help="NIfTI volumes, DICOM files and/or DICOM folders (default: the held-out MNI152 2009a template).",
    )] = None,
    model: Annotated[str | None, typer.Option(
        "--model", help="Model id under --models-dir, or a model directory (default: codec.model).")] = None,
    models_dir: ModelsDirOption = None,
    quality: Annotated[list[int] | None, typer.Option(
        "--quality", "-q", help="Only this operating point of the learned codec (repeatable; default: all).")] = None,
    max_abs_error: Annotated[list[int] | None, typer.Option(
        "--max-abs-error", min=0, help="Error bounds to evaluate when the model supports them (repeatable; "
        "default 0 1 2 4 8).")] = None,
    study: Annotated[list[str] | None, typer.Option(
        "--study", help="Evaluate on this archived study's original instances (repeatable; see --config).")] = None,
    real_mr: Annotated[bool, typer.Option(
        "--real-mr", help="Evaluate on the real clinical MR shipped in installed packages (pydicom-data...).")] = False,
    config: ConfigOption = None,
    database_url: DatabaseUrlOption = None,
    slices: Annotated[int, typer.Option(
        "--slices", min=0, help="Evenly spaced non-empty slices per volume/series (0 = all).")] = 16,
    size: Annotated[int, typer.Option(
        "--size", min=0, help="NIfTI slices are resampled to SIZE x SIZE (0 = the volume's own grid).")] = 512,
    bits: Annotated[int, typer.Option(
        "--bits", min=2, max=16, help="NIfTI slices are quantised to BITS unsigned bits.")] = 12,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print everything (definitions, per-slice rows, BD-rates) as JSON.")] = False,
    plot: Annotated[Path | None, typer.Option(
        "--plot", help="Write PSNR vs bpp for every codec to this PNG (and bpp vs the error bound to "
        "NAME_bounds.png).")] = None,
    device: Annotated[str | None, typer.Option(
        "--device", help="auto | cpu | cuda (default: codec.device).")] = None,
    standard: Annotated[bool, typer.Option(
        "--standard/--no-standard", help="Also run the standard codecs.")] = True,
    bd_range: Annotated[str | None, typer.Option(
        "--bd-range", help="Average BD-rates over LOW:HIGH dB only (default: the whole PSNR overlap).")] = None,
) -> None:
    """Measure every operating point of the learned codec and standard codecs on the same slices.

    PSNR = 10*log10(R^2/MSE), R = max - min of the original slice; bpp = compressed bytes * 8 / pixels;
    BD-rate over the PSNR overlap. See docs/evaluation.md for every definition.
    """
    require_extra("evaluate", "train", "nibabel", "scipy")
    from rich.console import Console

    from pacs_cae.evaluation.evaluate import select_points

    console = Console(stderr=True, soft_wrap=True)
    try:
        window = _bd_window(bd_range)
        if sum(bool(x) for x in (sources, study, real_mr)) > 1:
            raise _UserError("give SOURCES, --study or --real-mr, one of them")
        # the same settings as serve (file, PACS_CAE_* environment, flags): models directory, model, device
        settings = load_or_exit("evaluate", config, database_url=database_url, models_dir=models_dir)
        codec_settings = settings.codec
        model_id = model or (codec_settings.model if codec_settings.model.strip().lower() not in NO_MODEL
                             else "cae-paper")
        models = codec_settings.models_dir
        codec = _load(model_id, device or codec_settings.device, models)
        try:
            select_points(codec, quality or None)
        except ValueError as exc:
            raise _UserError(str(exc)) from None
        chosen, skipped, described, names = _slices(sources, study, real_mr, settings, slices or None, size, bits)
    except _UserError as exc:
        typer.echo(f"pacs-cae evaluate: {exc}", err=True)
        raise typer.Exit(2) from None
    device_name = str(getattr(codec, "device", "?"))
    console.print(f"{len(chosen)} slices from {described}; model {codec.model_id} on {device_name}"
                  + (f"; {len(skipped)} instance(s) skipped" if skipped else ""))
    for item in skipped:
        console.print(f"  skipped {item.sop_instance_uid}: {item.reason}")

    from pacs_cae.evaluation.evaluate import report_dict, run_evaluation
    from pacs_cae.evaluation.plots import plot_bounds, plot_rate_distortion
    from pacs_cae.evaluation.report import bd_rate_table, rich_table, run_settings

    with console.status("evaluating") as status:
        results = run_evaluation(
            chosen, codec, standard=None if standard else [], qualities=quality or None,
            bounds=max_abs_error or None, progress=lambda name: status.update(f"evaluating {name}"),
        )
    extra = [*(a for q in quality or [] for a in ("--quality", str(q))),
             *(a for d in max_abs_error or [] for a in ("--max-abs-error", str(d))),
             *(a for uid in study or [] for a in ("--study", uid)), *(["--real-mr"] if real_mr else []),
             *(["--bd-range", bd_range] if bd_range else []), *([] if standard else ["--no-standard"]),
             *(["--config", str(config)] if config else []),
             *(["--database-url", database_url] if database_url else [])]
    run = run_settings(names, model=model_id, slices=slices, size=size, bits=bits, device=device_name,
                       models_dir=str(models) if models else None, extra=extra)
    if config:
        run["config"] = str(config)
    report = report_dict(results, chosen, model=_model_info(codec), settings=run, bd_window=window,
                         skipped=[s.to_dict() for s in skipped])
    if plot:
        plot_rate_distortion(results, plot, title=f"{codec.model_id} vs standard codecs, {len(chosen)} slices")
        console.print(f"plot written to {plot}")
        if any(r.bound is not None for r in results):
            bounds_plot = plot.with_name(f"{plot.stem}_bounds{plot.suffix}")
            plot_bounds(results, bounds_plot, title=f"{codec.model_id}: bpp against the error bound, "
                                                    f"{len(chosen)} slices")
            console.print(f"plot written to {bounds_plot}")
    if as_json:
        json.dump(report, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return
    out = Console(width=None if sys.stdout.isatty() else 200)
    out.print(rich_table(results, title=f"{codec.model_id}: {len(chosen)} slices from {described}"))
    out.print(bd_rate_table(report["bd_rate"]))
    out.print(f"reproduce: {run['command']}", soft_wrap=True)


class _UserError(Exception):
    """A mistake in the command line or its inputs: one line on stderr, exit status 2."""


def _bd_window(text: str | None) -> tuple[float, float] | None:
    if not text:
        return None
    try:
        low, high = (float(v) for v in text.split(":"))
    except ValueError:
        raise _UserError(f"--bd-range wants LOW:HIGH in dB, e.g. 45:65, not {text!r}") from None
    if not high > low:
        raise _UserError(f"--bd-range {text}: HIGH must be above LOW")
    return low, high


def _load(model: str, device: str, models_dir: Any) -> Any:
    from pacs_cae.codec import CodecError, load_codec

    try:
        return load_codec(model, device=device, models_dir=models_dir)
    except (CodecError, ValueError, RuntimeError) as exc:
        raise _UserError(f"cannot load model {model!r}: {exc}") from None


def _slices(sources: list[Path] | None, study: list[str] | None, real_mr: bool, settings: Any,
            count: int | None, size: int, bits: int) -> tuple[list, list, str, list[str]]:
    """(slices, skipped instances, a short description of where they came from, the SOURCES used)."""
    from pacs_cae.evaluation.eval_slices import archive_slices, load_eval_slices

    try:
        if study:
            try:
                chosen, skipped = archive_slices(settings, study, count)
            except ValueError:  # a study the archive does not hold: the caller's one-line error
                raise
            except Exception as exc:  # noqa: BLE001 - database unreachable, schema out of date, bad UID
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]  # SQLAlchemy adds lines
                raise _UserError(f"cannot read the archive: {first}") from None
            if not chosen:
                raise _UserError(f"no original monochrome instance to evaluate in study {', '.join(study)} "
                                 f"({len(skipped)} skipped: {skipped[0].reason if skipped else 'none'})")
            return chosen, skipped, f"study {', '.join(study)}", []
        if real_mr:
            from pacs_cae.evaluation.packaged_mr import packaged_mr_files

            files = packaged_mr_files()
            if not files:
                raise _UserError("no packaged real MR found: pip install pydicom-data (and nibabel)")
            return load_eval_slices([p for p, _ in files], count=count), [], f"{len(files)} packaged real MR files", []
        if not sources:
            from pacs_cae.train.data import default_val_paths

            sources = default_val_paths()
        chosen = load_eval_slices(list(sources), count=count, size=size, bits=bits)
        return chosen, [], f"{len(sources)} source(s)", [str(p) for p in sources]
    except (ValueError, FileNotFoundError) as exc:
        raise _UserError(str(exc)) from None


def _model_info(codec: Any) -> dict:
    from pacs_cae.evaluation.evaluate import operating_points

    card = getattr(codec, "card", None)
    return {
        "model_id": codec.model_id,
        "sha256": getattr(codec, "weights_sha256", None),
        "trained": bool(card.trained) if card else None,
        "qualities": [q for q in operating_points(codec) if q is not None],
    }
