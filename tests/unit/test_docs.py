"""The user-facing docs travel with the code: links resolve, every setting Tessera reads is documented."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "helm" / "tessera" / "README.md"]
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_the_docs_pages_exist():
    names = {p.name for p in (ROOT / "docs").glob("*.md")}
    assert {"wire-contract.md", "error-codes.md", "caveats.md", "configuration.md", "operations.md"} <= names


def test_relative_links_resolve_inside_the_repository():
    broken = []
    for page in PAGES:
        for target in _LINK.findall(page.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path = (page.parent / target.split("#", 1)[0]).resolve()
            if not path.is_relative_to(ROOT) or not path.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert broken == []


def test_every_tessera_variable_the_code_reads_is_in_the_configuration_reference():
    read = set()
    for source in (ROOT / "authz").rglob("*.py"):
        if "api" in source.relative_to(ROOT).parts[:2]:
            continue
        read |= set(re.findall(r"[\"']TESSERA_[A-Z][A-Z0-9_]*[A-Z0-9][\"']", source.read_text()))
    read = {name.strip("\"'") for name in read} - {"TESSERA_ERROR"}  # an error reason, not a setting
    # the body limits are read as f"TESSERA_BODY_{name}" (authz.config.BodyLimitsConfig)
    from authz.config import BodyLimitsConfig

    read |= {f"TESSERA_BODY_{name.upper()}" for name in BodyLimitsConfig.__dataclass_fields__}
    documented = (ROOT / "docs" / "configuration.md").read_text()
    missing = sorted(v for v in read if v not in documented)
    assert len(read) > 20
    assert missing == [], f"docs/configuration.md lacks {missing}"
