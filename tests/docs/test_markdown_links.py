"""Every relative link and #anchor in the repository's Markdown files resolves, as GitHub resolves
them: the file (or folder) exists, and an anchor names a heading of the target file under
GitHub's slug rules (the rules MyST's `myst_heading_slug_func = "github"` uses for the docs site,
docs/conf.py). External links (http, mailto, ...) are not fetched."""

import os
import re
import subprocess
from typing import Dict, List, Optional, Set

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t#]*$")
SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
HTML_ID = re.compile(r"<a\s[^>]*(?:name|id)=[\"']([^\"']+)[\"']", re.IGNORECASE)
COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
CODE_SPAN = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)", re.DOTALL)
# [text](dest) and ![alt](dest); dest is <...> or has no spaces; an optional "title" follows.
INLINE_LINK = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^\s()]*(?:\([^\s()]*\)[^\s()]*)*)(?:\s+[\"'(][^)]*)?\s*\)"
)
REFERENCE_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(\S+)", re.MULTILINE)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
# GitHub's slug: lower case, every character but letters, digits, "_", "-" and " " removed,
# spaces to hyphens (github-slugger; MyST's github_slugify).
SLUG_DROP = re.compile(r"[^\w\- ]")


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading, from its Markdown source text."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links and images: their text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.replace("`", "").replace("*", "")  # code spans and emphasis markers
    return SLUG_DROP.sub("", text.lower().replace(" ", "-"))


def markdown_files(root: str = ROOT) -> List[str]:
    """The repository's Markdown files, relative to root: tracked ones and new ones git does not
    ignore (so a page is checked before it is committed)."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", "--", "*.md"],
            cwd=root,
            capture_output=True,
            check=True,
        ).stdout.decode()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the tracked Markdown files are unknown")
    return sorted(p for p in set(out.split("\0")) if p and os.path.isfile(os.path.join(root, p)))


def _lines_outside_fences(text: str) -> List[Optional[str]]:
    """The file's lines, None for those inside fenced code blocks (and the fences)."""
    lines, fence = [], None
    for line in text.splitlines():
        match = FENCE.match(line)
        if fence is None and match:
            fence = match.group(1)
            lines.append(None)
        elif fence is not None:
            if match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence):
                if not line.strip()[len(match.group(1)) :].strip():
                    fence = None
            lines.append(None)
        else:
            lines.append(line)
    return lines


def anchors(path: str) -> Set[str]:
    """The anchors of a Markdown file: its headings' GitHub slugs (repeats get -1, -2, ...) and
    explicit <a name=...> / id=... targets."""
    text = COMMENT.sub("", open(path, encoding="utf-8").read())
    lines = _lines_outside_fences(text)
    found: Set[str] = set()
    counts: Dict[str, int] = {}
    for i, line in enumerate(lines):
        if line is None:
            continue
        found.update(HTML_ID.findall(line))
        title = None
        match = HEADING.match(line)
        if match:
            title = match.group(2)
        elif (
            i + 1 < len(lines)
            and lines[i + 1] is not None
            and line.strip()
            and SETEXT.match(lines[i + 1])
            and not HEADING.match(line)
            and not line.lstrip().startswith(("-", "*", "|", ">"))
        ):
            title = line.strip()
        if title is None:
            continue
        slug = github_slug(title)
        n = counts.get(slug, 0)
        counts[slug] = n + 1
        found.add(slug if n == 0 else f"{slug}-{n}")
    return found


def links(path: str) -> List[str]:
    """The link destinations of a Markdown file, outside code blocks, code spans and comments."""
    text = COMMENT.sub("", open(path, encoding="utf-8").read())
    prose = "\n".join(line or "" for line in _lines_outside_fences(text))
    prose = CODE_SPAN.sub("", prose)
    found = [m.group(1) for m in INLINE_LINK.finditer(prose)]
    found += REFERENCE_DEF.findall(prose)
    return [d[1:-1] if d.startswith("<") and d.endswith(">") else d for d in found]


def broken_links(md_file: str, root: str = ROOT) -> List[str]:
    """The relative links of md_file (relative to root) that do not resolve, with the reason."""
    source = os.path.join(root, md_file)
    problems = []
    cache: Dict[str, Set[str]] = {}
    for dest in links(source):
        if not dest or SCHEME.match(dest) or dest.startswith("//"):
            continue
        target, _, anchor = dest.partition("#")
        target = target.split("?")[0]
        if target:
            base = root if target.startswith("/") else os.path.dirname(source)
            full = os.path.normpath(os.path.join(base, target.lstrip("/")))
            if not (full + os.sep).startswith(os.path.join(root, "")):
                problems.append(f"{dest}: outside the repository")
                continue
            if not os.path.exists(full):
                problems.append(f"{dest}: {os.path.relpath(full, root)} does not exist")
                continue
        else:
            full = source
        if anchor and full.endswith(".md") and os.path.isfile(full):
            if full not in cache:
                cache[full] = anchors(full)
            if anchor not in cache[full]:
                problems.append(
                    f"{dest}: no heading with anchor #{anchor} in {os.path.relpath(full, root)}"
                )
    return problems


@pytest.mark.parametrize("md_file", markdown_files())
def test_relative_links_and_anchors_resolve(md_file):
    problems = broken_links(md_file)
    assert not problems, f"{md_file}: broken links:\n  " + "\n  ".join(problems)


def test_markdown_files_are_found():
    files = markdown_files()
    for expected in ("README.md", "MODEL_ZOO.md", "docs/index.md", "datasets/README.md"):
        assert expected in files


@pytest.mark.parametrize(
    "heading, slug",
    [
        ("VFNet, ATSS + VFL and MuSu", "vfnet-atss--vfl-and-musu"),
        (
            "The bundled photo-like dataset: `d2ext_photos`",
            "the-bundled-photo-like-dataset-d2ext_photos",
        ),
        (
            "What the configs set (mmdetection's model, in Detectron2 / d2ext keys)",
            "what-the-configs-set-mmdetections-model-in-detectron2--d2ext-keys",
        ),
        (
            "GFocalV2 (GFL v2) R-50-FPN 1x: what is and is not shown",
            "gfocalv2-gfl-v2-r-50-fpn-1x-what-is-and-is-not-shown",
        ),
        ("**Bold** and [a link](x.md)", "bold-and-a-link"),
        ("MuSu (λ 0.2) — σ", "musu-λ-02--σ"),
    ],
)
def test_github_slug(heading, slug):
    assert github_slug(heading) == slug


def test_checker_finds_broken_links_and_anchors(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text(
        "# Page\n\n## A section\n\n## A section\n\n```\n# not a heading\n[ignored](missing.md)\n```\n"
    )
    (tmp_path / "README.md").write_text(
        "# Top\n\n"
        "[ok](docs/page.md) [ok](docs/page.md#a-section) [ok](docs/page.md#a-section-1) "
        "[ok](#top) [ok](docs/) [ok](https://example.com/x.md#nowhere) `[code](nowhere.md)`\n"
        "<!-- [comment](nowhere.md) -->\n"
        "[bad](docs/missing.md) [bad](docs/page.md#not-a-section) [bad](#nowhere) "
        "[bad](docs/page.md#not-a-heading)\n"
        "[ref]: docs/absent.md\n"
    )
    problems = broken_links("README.md", root=str(tmp_path))
    assert len(problems) == 5, problems
    assert any("docs/missing.md does not exist" in p for p in problems)
    assert any("#not-a-section" in p for p in problems)
    assert any("#nowhere" in p for p in problems)
    assert any("#not-a-heading" in p for p in problems)
    assert any("absent.md" in p for p in problems)
