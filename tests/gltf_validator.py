"""The Khronos glTF-Validator (npm ``gltf-validator``, pinned in package.json) run through node.

One node process validates a whole batch of GLBs, so a test pays node's start-up once.
"""

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VALIDATOR = ROOT / "node_modules" / "gltf-validator"

_SCRIPT = """
const fs = require("fs");
const validator = require(process.argv[1]);
(async () => {
  const reports = [];
  for (const path of process.argv.slice(2)) {
    const report = await validator.validateBytes(new Uint8Array(fs.readFileSync(path)),
                                                 {format: "glb", maxIssues: 0, writeTimestamp: false});
    reports.push(report);
  }
  process.stdout.write(JSON.stringify(reports));
})().catch((error) => { console.error(String(error)); process.exit(1); });
"""


@dataclass(frozen=True)
class GltfReport:
    """The validator's verdict on one asset.

    Attributes:
        errors: number of errors. warnings: number of warnings.
        messages: every issue as ``SEVERITY CODE at POINTER: message`` (severity 0 = error).
        info: the validator's summary of the asset (counts of draw calls, textures, vertices...).
    """

    errors: int
    warnings: int
    messages: list[str]
    info: dict


def available() -> bool:
    """Whether node and the pinned validator package are installed."""
    return shutil.which("node") is not None and (VALIDATOR / "package.json").is_file()


def validate_glbs(assets: list[bytes]) -> list[GltfReport]:
    """Validate GLB byte strings; one report per asset, in order.

    Raises:
        RuntimeError: node failed (validator missing or the input not parseable at all).
    """
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for index, data in enumerate(assets):
            path = Path(folder) / f"asset{index}.glb"
            path.write_bytes(data)
            paths.append(str(path))
        done = subprocess.run(["node", "-e", _SCRIPT, str(VALIDATOR), *paths], capture_output=True, text=True,
                              timeout=120, check=False)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"gltf-validator failed: {done.stderr.strip()}")
    reports = []
    for raw in json.loads(done.stdout):
        issues = raw["issues"]
        messages = [f"{m['severity']} {m['code']} at {m.get('pointer', '')}: {m['message']}"
                    for m in issues["messages"]]  # fmt: skip
        reports.append(GltfReport(issues["numErrors"], issues["numWarnings"], messages, raw.get("info", {})))
    return reports


def validate_glb(data: bytes) -> GltfReport:
    """Validate one GLB (see ``validate_glbs``)."""
    return validate_glbs([data])[0]
