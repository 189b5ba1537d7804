"""The README's DCMTK session ("Talking to it with DCMTK") runs as written against a real `pacs-cae serve`.

Only what a reader would substitute is replaced: the ports (free ones instead of 11112/11113), the folder
(a `pacs-cae export` layout: study/series/instance.dcm) and the Study Instance UID.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pacs_cae.testing import dcmtk
from pacs_cae.testing.factories import make_mr_series
from pacs_cae.testing.server_process import free_port, start_server, write_config

pytestmark = pytest.mark.e2e


def dcmtk_block() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Talking to it with DCMTK"):]
    return re.search(r"```sh\n(.*?)```", section, flags=re.DOTALL).group(1)  # type: ignore[union-attr]


def test_readme_dcmtk_session(tmp_path: Path) -> None:
    if dcmtk.missing_tools():
        pytest.fail(f"DCMTK tools not found: {dcmtk.missing_tools()}", pytrace=False)
    series = make_mr_series(2, 64, 64, 12, patient_id="DOE1", patient_name="DOE^JOHN", study_date="20240315")
    study = str(series[0].StudyInstanceUID)
    folder = tmp_path / "export" / study / str(series[0].SeriesInstanceUID)
    folder.mkdir(parents=True)
    for ds in series:
        ds.save_as(folder / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
    port, move_port = free_port(), free_port()
    config = write_config(tmp_path / "pacs-cae.toml", data_dir=tmp_path / "data", port=port,
                          database_url=f"sqlite:///{tmp_path / 'data' / 'archive.db'}",
                          codec={"model": "none"}, remotes={"STORESCP": move_port})
    script = (dcmtk_block().replace("11112", str(port)).replace("11113", str(move_port))
              .replace("path/to/study/", f"{tmp_path / 'export'}/").replace("1.2.3", study)
              .replace("/usr/bin/", str(Path(dcmtk.tool("echoscu") or "/usr/bin/echoscu").parent) + "/"))
    # the harness, not the reader, waits for the backgrounded storescp and stops it afterwards
    script = script.replace(" &\n", f" &\nfor i in $(seq 50); do (echo > /dev/tcp/127.0.0.1/{move_port}) 2>/dev/null "
                                      "&& break; sleep 0.1; done\n")
    work = tmp_path / "session"
    work.mkdir()
    server = start_server(tmp_path, config, port)
    try:
        proc = subprocess.run(["bash", "-e", "-c", script + "\nsleep 0.5; kill %1\n"], cwd=work, capture_output=True,
                              text=True, timeout=300, check=False)
    finally:
        server.stop(signal.SIGTERM)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output + server.log()
    assert study in output and "NumberOfStudyRelatedInstances" in output  # findscu printed the match
    assert len(list((work / "out").iterdir())) == 2, output
    assert len(list((work / "incoming").iterdir())) == 2, output
