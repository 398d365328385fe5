"""Rendering the executed report notebook: self-contained HTML (nbconvert) and PDF (headless Chromium).

The HTML hides code, embeds figures as data URIs and turns LaTeX into MathML, so a browser shows it
without fetching anything (no MathJax, no require.js from a CDN); `external_resources` checks that.
Chromium prints that HTML to PDF, offline.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import nbformat
from jinja2 import DictLoader, pass_context
from latex2mathml.converter import convert as latex2mathml_convert
from nbconvert import HTMLExporter
from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath

from tinymatch.io_utils import atomic_path, atomic_write_text

CHROMIUM_ENV_VAR = "TINYMATCH_CHROMIUM"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


class ReportError(RuntimeError):
    """A notebook of the pipeline failed, or the rendered report is not what it must be."""


class ChromiumNotFoundError(FileNotFoundError):
    """Raised when the PDF is asked for but no Chromium/Chrome executable can be found."""


REPORT_CSS = """
body { max-width: 60rem; margin: 0 auto; }
.jp-Notebook { padding: 0 1.5rem; }
.jp-InputPrompt, .jp-OutputPrompt { display: none !important; }
.jp-RenderedHTMLCommon table { margin: 0.6em 0 1em 0; font-size: 0.85rem; }
figure.tinymatch-figure { margin: 1em 0 1.4em 0; text-align: center; break-inside: avoid; page-break-inside: avoid; }
figure.tinymatch-figure img { max-width: 100%; height: auto; }
figure.tinymatch-figure figcaption { font-size: 0.85rem; text-align: left; color: #333; margin-top: 0.3em; }
math[display="block"] { margin: 0.8em 0; }
.jp-RenderedHTMLCommon h1, .jp-RenderedHTMLCommon h2, .jp-RenderedHTMLCommon h3 {
  break-after: avoid; page-break-after: avoid; }
math { font-size: 1.08em; }
nav.tinymatch-toc { font-size: 0.9rem; margin: 1em 0 1.5em 0; padding: 0.6em 1em; border: 1px solid #ddd;
  background: #fafafa; break-inside: avoid; page-break-inside: avoid; }
nav.tinymatch-toc ol { margin: 0.2em 0; padding-left: 1.4em; list-style: none; }
nav.tinymatch-toc a { text-decoration: none; color: #1f4e8c; }
@page { size: A4; margin: 14mm 12mm; }
@media print { body { max-width: none; } .anchor-link { display: none; }
  /* JupyterLab keeps every output whole on one page: a long part (text and tables) then jumps to
     the next page and leaves the last one half blank. Let outputs break between blocks; figures,
     table rows and the contents box stay whole. */
  .jp-OutputArea .jp-OutputArea-child { break-inside: auto !important; page-break-inside: auto !important; }
  .jp-RenderedHTMLCommon tr, .jp-RenderedHTMLCommon p { break-inside: avoid; page-break-inside: avoid; }
  /* A table's caption (the paragraph right before it) stays on the page where the table starts. */
  .jp-RenderedHTMLCommon p:has(+ table) { break-after: avoid; page-break-after: avoid; }
  /* A figure taller than the rest of a page leaves that page blank: cap a figure at 60% of the
     printable A4 height (269 mm), so a page with a heading and a table still takes the next one. */
  figure.tinymatch-figure img { max-height: 160mm; width: auto; } }
"""

# The lab template without anything fetched from the network: no require.js, no MathJax, no
# Mermaid, no widget manager (the report has none of them: formulas are MathML, see below).
_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block extra_css -%}<style type="text/css">""" + REPORT_CSS + """</style>{%- endblock extra_css -%}
"""


def render_html(notebook, html_path, *, title: str = "tinymatch report") -> Path:
    """Executed notebook -> self-contained HTML with code hidden and LaTeX as MathML."""
    notebook, html_path = Path(notebook), Path(html_path)
    if not notebook.is_file():
        raise FileNotFoundError(f"executed report notebook not found: {notebook}")
    nb = nbformat.read(notebook, as_version=4)
    check_notebook_outputs(nb, notebook)
    nb.metadata["title"] = title
    for cell in nb.cells:  # warnings printed by libraries are not part of the report
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs
                            if not (o.get("output_type") == "stream" and o.get("name") == "stderr")]
    body, _ = _exporter().from_notebook_node(nb, resources={"metadata": {"name": title}})
    body = add_table_of_contents(body)
    external = external_resources(body)
    if external:
        raise ReportError(f"{html_path}: the report would load external resources: {', '.join(external[:5])}")
    return atomic_write_text(html_path, body)


_HEADING = re.compile(r"<h([23])((?:\s[^>]*)?)>(.*?)</h\1>", re.S | re.I)
_ID = re.compile(r"""\sid\s*=\s*["']([^"']+)["']""", re.I)


def add_table_of_contents(page: str, *, title: str = "Contents") -> str:
    """`page` with an id on every h2/h3 heading and a linked table of contents built from them
    (h3 nested under their h2), inserted before the first h2. A page without such headings is
    returned unchanged."""
    entries: list[tuple[int, str, str]] = []
    used: set[str] = set()

    def number(match: re.Match) -> str:
        level, attributes, inner = int(match.group(1)), match.group(2), match.group(3)
        text = " ".join(html.unescape(re.sub(r"<[^>]+>", "", inner)).split())
        found = _ID.search(attributes)
        if found:
            anchor = found.group(1)
        else:
            anchor = base = "section-" + (re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "untitled")
            suffix = 2
            while anchor in used:
                anchor, suffix = f"{base}-{suffix}", suffix + 1
            attributes = f'{attributes} id="{anchor}"'
        used.add(anchor)
        entries.append((level, anchor, text))
        return f"<h{level}{attributes}>{inner}</h{level}>"

    page = _HEADING.sub(number, page)
    if not entries:
        return page
    items, open_sub = [], False
    for level, anchor, text in entries:
        link = f'<a href="#{html.escape(anchor)}">{html.escape(text)}</a>'
        if level == 3 and items:
            if not open_sub:
                items[-1] = items[-1].removesuffix("</li>") + "<ol>"
                open_sub = True
            items.append(f"<li>{link}</li>")
            continue
        if open_sub:
            items[-1] += "</ol></li>"
            open_sub = False
        items.append(f"<li>{link}</li>")
    if open_sub:
        items[-1] += "</ol></li>"
    toc = (f'<nav class="tinymatch-toc" id="contents"><p><b>{html.escape(title)}</b></p><ol>{"".join(items)}'
           f"</ol></nav>\n")
    first = page.find("<h2")
    first = first if first >= 0 else page.find("<h3")
    return page[:first] + toc + page[first:]


class OfflineHTMLExporter(HTMLExporter):
    """HTMLExporter whose Markdown renders $...$ and $$...$$ to MathML (no MathJax needed)."""

    def default_filters(self):
        for name, function in super().default_filters():
            yield (name, self.markdown2html_mathml if name == "markdown2html" else function)

    @pass_context
    def markdown2html_mathml(self, context, source):
        return markdown_to_html(source)


def _exporter() -> OfflineHTMLExporter:
    return OfflineHTMLExporter(template_name="lab", template_file="tinymatch_report.html.j2",
                               extra_loaders=[DictLoader({"tinymatch_report.html.j2": _TEMPLATE})],
                               exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True,
                               exclude_anchor_links=True, embed_images=True)


class MathMLRenderer(IPythonRenderer):
    """nbconvert's Markdown renderer with every formula as MathML."""

    def block_math(self, body: str) -> str:
        return latex_to_mathml(body, display=True)

    def inline_math(self, body: str) -> str:
        return latex_to_mathml(body, display=False)

    def latex_environment(self, name: str, body: str) -> str:
        return latex_to_mathml(f"\\begin{{{name}}}{body}\\end{{{name}}}", display=True)


def markdown_to_html(source: str) -> str:
    """Markdown (with $inline$ and $$display$$ LaTeX) -> HTML with MathML formulas."""
    renderer = MathMLRenderer(escape=False, exclude_anchor_links=True)
    return MarkdownWithMath(renderer=renderer).render(source)


def latex_to_mathml(latex: str, *, display: bool = False) -> str:
    """LaTeX -> MathML, which browsers (and Chromium's PDF printer) render without any script."""
    return latex2mathml_convert(latex.strip(), display="block" if display else "inline")


_EXTERNAL = re.compile(r"<(script|link|img|iframe|source|video|audio|embed|object)\b[^>]*?"
                       r"\b(src|href|data)\s*=\s*[\"']?\s*((?:https?:)?//[^\"'\s>]+)", re.I)
_CSS_URL = re.compile(r"url\(\s*[\"']?\s*((?:https?:)?//[^\"')\s]+)", re.I)
_CSS_IMPORT = re.compile(r"@import\s+[\"']((?:https?:)?//[^\"']+)", re.I)


def external_resources(page: str) -> list[str]:
    """URLs a browser would fetch to show `page` (scripts, styles, images, CSS url()/@import).

    Plain hyperlinks (`<a href>`) are not resources and are allowed.
    """
    found = [match.group(3) for match in _EXTERNAL.finditer(page)]
    found += _CSS_URL.findall(page) + _CSS_IMPORT.findall(page)
    return sorted(set(found))


def check_notebook_outputs(nb, path) -> None:
    """Refuse to render a report with error outputs in it."""
    for number, cell in enumerate(nb.cells, start=1):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                raise ReportError(f"{path}: cell {number} has an error output: "
                                  f"{output.get('ename')}: {output.get('evalue')}")


def find_chromium() -> str:
    """Path of a Chromium/Chrome executable: $TINYMATCH_CHROMIUM, else the usual names on PATH."""
    explicit = os.environ.get(CHROMIUM_ENV_VAR)
    if explicit:
        if shutil.which(explicit):
            return shutil.which(explicit)
        raise ChromiumNotFoundError(f"${CHROMIUM_ENV_VAR}={explicit!r} is not an executable")
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise ChromiumNotFoundError(
        "the PDF needs headless Chromium, but none of " + ", ".join(CHROMIUM_NAMES) + " is on PATH: "
        "install it (Debian/Ubuntu: apt-get install chromium) or set $TINYMATCH_CHROMIUM, "
        "or render HTML only with `tinymatch report --no-pdf`")


def render_pdf(html_path, pdf_path, *, timeout: float = 180) -> Path:
    """Print `html_path` to `pdf_path` with headless Chromium (offline; atomic write)."""
    html_path, pdf_path = Path(html_path).resolve(), Path(pdf_path)
    if not html_path.is_file():
        raise FileNotFoundError(f"report HTML not found: {html_path}")
    chromium = find_chromium()
    with tempfile.TemporaryDirectory(prefix="tinymatch-chromium-") as profile, atomic_path(pdf_path) as tmp:
        command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                   "--disable-background-networking", "--disable-component-update", "--disable-sync",
                   "--disable-extensions", "--disable-dev-shm-usage", "--hide-scrollbars",
                   f"--user-data-dir={profile}", f"--print-to-pdf={tmp.resolve()}", "--no-pdf-header-footer",
                   html_path.as_uri()]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                    stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise ReportError(f"Chromium did not print {pdf_path} within {timeout:.0f} s") from None
        if not tmp.is_file() or tmp.stat().st_size == 0:
            tail = "\n".join((result.stderr or "").strip().splitlines()[-5:])
            raise ReportError(f"Chromium ({chromium}) failed to print {pdf_path} "
                              f"(exit status {result.returncode}): {tail}")
    return pdf_path


__all__ = ["render_html", "render_pdf", "markdown_to_html", "latex_to_mathml", "external_resources",
           "add_table_of_contents",
           "check_notebook_outputs", "find_chromium", "ReportError", "ChromiumNotFoundError",
           "CHROMIUM_ENV_VAR", "CHROMIUM_NAMES", "REPORT_CSS"]
