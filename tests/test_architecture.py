"""The engine never imports Streamlit; only zoidberg/ui does."""

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_import_zoidberg_pulls_in_no_streamlit():
    code = (
        "import sys, zoidberg, zoidberg.cli, zoidberg.cv, zoidberg.data, zoidberg.jobs, zoidberg.predict, zoidberg.models;"
        "print('streamlit' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    assert result.stdout.strip() == "False"


def test_no_streamlit_import_outside_ui():
    offenders = []
    for path in (REPO_ROOT / "zoidberg").rglob("*.py"):
        if "ui" in path.relative_to(REPO_ROOT / "zoidberg").parts[:1]:
            continue
        for line in path.read_text().splitlines():
            stripped = line.strip()
            if stripped.startswith(("import streamlit", "from streamlit")):
                offenders.append(str(path))
    assert offenders == []


def test_upload_limit_in_streamlit_config_matches_the_engine():
    import tomllib

    from zoidberg.imaging import MAX_UPLOAD_BYTES

    config = tomllib.loads((Path(__file__).resolve().parent.parent / ".streamlit" / "config.toml").read_text())
    assert config["server"]["maxUploadSize"] * 1024 * 1024 == MAX_UPLOAD_BYTES
