"""The Markdown model card (``models/<id>/README.md``), rendered from ``card.json`` so the two agree."""

from __future__ import annotations

from pacs_cae.codec.weights import ModelCard
from pacs_cae.evaluation.metrics import DEFINITIONS

#: How the card names each model family.
ARCHITECTURES = {
    "cae-paper": "the paper's CAE, unchanged; `pacs_cae.codec.model`",
    "mshp": "mean-scale hyperprior with gain units, rate-distortion trained, ANS-coded; `pacs_cae.codec.rd`",
}


def _list(items: list[str]) -> str:
    return "\n".join(f"- `{i}`" for i in items) if items else "- (not recorded)"


def render_readme(card: ModelCard, curve_file: str | None = None) -> str:
    """The card as Markdown: identity, data, recipe, compute, measured evaluation, learning curve."""
    x = card.extra
    recipe = x.get("recipe") or {}
    lines = [
        f"# Model `{card.model_id}`",
        "",
        x.get("description", ""),
        "",
        "| | |",
        "|---|---|",
        f"| id | `{card.model_id}` |",
        f"| architecture | `{card.architecture}` ({ARCHITECTURES.get(card.architecture, 'see card.json')}) |",
        f"| weights | `model.safetensors`, {x.get('weights_dtype', 'float32')}, sha256 `{card.sha256}` |",
        f"| trained | {'yes' if card.trained else 'NO (untrained)'} |",
        f"| steps | {x.get('steps')} |",
        f"| training time | {x.get('training_hours')} h on `{x.get('device')}` (torch {x.get('torch')}) |",
        f'| load | `load_codec({card.model_id!r})` or `[codec] model = "{card.model_id}"` |',
        "",
        "## Training data",
        _list(x.get("training_data") or []),
        "",
        "## Held out (never trained on)",
        _list(x.get("held_out_data") or []),
        "",
        "## Recipe",
        "| setting | value |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in recipe.items()],
        "",
    ]
    best = x.get("best_val_psnr_db_during_training")
    if best is not None:
        lines += [
            (
                f"Best validation PSNR during training: {best:.2f} dB (float slices normalised to [0, 1], "
                "R = 1, 8-bit quantised latent; the training loop's own check, not the evaluation below)."
            ),
            "",
        ]
    rd = x.get("rd_measurement")
    if rd:
        lines += ["## Measured rate-distortion (every quality)", "", rd["text"], "", rd["table_markdown"], "",
                  "Reproduce with:", "", "```", rd["command"], "```", ""]
        if rd.get("speed_markdown"):
            lines += ["## Measured speed", "", rd["speed_markdown"], ""]
    ev = x.get("evaluation")
    lines.append("## Measured evaluation")
    if ev:
        lines += [
            (
                f"On {ev['slices']} held-out slices, device `{ev['device']}`, this model through the real "
                "codec (blob container and Brotli included) and the standard codecs on the same slices:"
            ),
            "",
            ev["table_markdown"],
            "",
            "Reproduce with:",
            "",
            "```",
            ev["command"],
            "```",
            "",
            "Full per-slice figures: `evaluation.json`. Definitions:",
            "",
            *[f"- **{k}**: {v}" for k, v in DEFINITIONS.items()],
            "",
        ]
    elif not rd:
        lines += ["Not measured at export (run `pacs-cae export-model ... --evaluate-on VOLUME`).", ""]
    else:
        lines += ["See the rate-distortion section above.", ""]
    if curve_file:
        lines += ["## Learning curve", "", f"![learning curve]({curve_file})", ""]
    if x.get("notes"):
        lines += ["## Notes", "", x["notes"], ""]
    return "\n".join(lines)
