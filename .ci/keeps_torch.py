"""CI: installing byorn into an environment that already has a torch in its range changes no torch.

Asks pip what `pip install .` would install into this venv (a dry run, no constraints file) and
fails if torch is among it. Run with the venv's python from the repository root.
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

with tempfile.TemporaryDirectory() as folder:
    report = Path(folder) / "report.json"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--dry-run", "--report", str(report), "."],
                   check=True)
    planned = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
torch_changes = sorted(name for name in planned if name == "torch" or name.startswith("nvidia-"))
if torch_changes:
    sys.exit(f"pip install . would change torch in an environment that has one: {torch_changes}")
print(f"pip install . keeps the installed torch (it would install: {', '.join(sorted(planned)) or 'nothing'})")
