"""Every design reference resolves inside the repository: code and docs cite docs/design.md by
section ("docs/design.md §4.5") or by anchor ("docs/design.md#s4.5"), each cited section exists,
no file points at a design document outside the repository, and the markdown files' relative
links lead to existing files and anchors."""

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DESIGN = ROOT / "docs" / "design.md"
SUFFIXES = {".py", ".cpp", ".h", ".cu", ".cuh", ".md", ".sh", ".txt", ".toml"}
SKIP_DIRS = {".git", "build", "runs", "__pycache__", ".hypothesis", ".pytest_cache"}

SECTION_REFS = re.compile(r"docs/design\.md((?:(?:,\s*|\s+and\s+|\s+)§\s*\d+(?:\.\d+)*)+)")
SECTION = re.compile(r"§\s*(\d+(?:\.\d+)*)")
ANCHOR_REF = re.compile(r"docs/design\.md#([\w.-]+)")
OUTSIDE = re.compile(r"DESIGN\s*§|DESIGN\.md|design card")
MD_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _sources() -> list[Path]:
    files = []
    for folder, dirs, names in os.walk(ROOT):  # symlinks (zeromamba/kernels) are not followed
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        for name in names:
            path = Path(folder) / name
            if (path.suffix in SUFFIXES or name == "CMakeLists.txt") and not path.is_symlink():
                files.append(path)
    return sorted(files)


def _anchors(md: Path) -> set[str]:
    """Explicit <a id="..."> anchors and the slugs GitHub gives the headings."""
    text = md.read_text(encoding="utf-8")
    slugs = {
        re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", text, re.MULTILINE)
    }
    return set(re.findall(r'<a id="([^"]+)"></a>', text)) | slugs


def test_design_document_numbers_its_sections():
    anchors = _anchors(DESIGN)
    headings = re.findall(
        r"^#{2,3} (\d+(?:\.\d+)?)[. ]", DESIGN.read_text(encoding="utf-8"), re.MULTILINE
    )
    assert headings, "docs/design.md has no numbered sections"
    missing = [h for h in headings if f"s{h}" not in anchors]
    assert not missing, f"sections without an anchor <a id=...>: {missing}"


def test_design_references_resolve():
    anchors = _anchors(DESIGN)
    bad = []
    for path in _sources():
        text = path.read_text(encoding="utf-8", errors="replace")
        rel = path.relative_to(ROOT)
        for refs in SECTION_REFS.finditer(text):
            for number in SECTION.findall(refs.group(1)):
                if f"s{number}" not in anchors:
                    bad.append(f"{rel}: docs/design.md §{number}")
        for anchor in ANCHOR_REF.findall(text):
            if anchor not in anchors:
                bad.append(f"{rel}: docs/design.md#{anchor}")
    assert not bad, "references to sections docs/design.md does not have:\n" + "\n".join(bad)


def test_no_reference_to_a_design_outside_the_repository():
    bad = [
        f"{path.relative_to(ROOT)}: {m.group(0)!r}"
        for path in _sources()
        if path != Path(__file__).resolve()
        for m in OUTSIDE.finditer(path.read_text(encoding="utf-8", errors="replace"))
    ]
    assert not bad, "point these at docs/design.md or at the code:\n" + "\n".join(bad)


@pytest.mark.parametrize("md", ["README.md", "bench/README.md", "docs/design.md"])
def test_markdown_links_resolve(md):
    source = ROOT / md
    bad = []
    for link in MD_LINK.findall(source.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", link):  # http:, https:, mailto:
            continue
        target, _, anchor = link.partition("#")
        path = (source.parent / target).resolve() if target else source
        if not path.exists():
            bad.append(f"{link}: no file {path.relative_to(ROOT)}")
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            bad.append(f"{link}: no anchor {anchor!r} in {path.relative_to(ROOT)}")
    assert not bad, f"broken links in {md}:\n" + "\n".join(bad)
