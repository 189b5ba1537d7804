"""The Typer application every command module registers on."""

import typer

app = typer.Typer(
    name="pacs-cae",
    help="A DICOM archive that stores brain MRI with a learned autoencoder codec.",
    no_args_is_help=True,
    add_completion=False,
)
