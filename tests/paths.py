from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "manifests" / "examples"
SHARED_DATA = REPO.parent / "shared" / "data"
