"""Author-year labels and "cited in" links for the bibliography page (loaded from
_config.yml).

The chapters cite author-year ("Ioffe and Szegedy, 2015", `bibtex_reference_style:
author_year`); pybtex's ``plain`` style would still label the list [1], [2], ... This
registers ``plain_authoryear``: pybtex's ``plain`` formatting and sorting, with each
entry labelled the way it is cited.

sphinxcontrib-bibtex links an entry back to its citations only when they are on the
same page as the bibliography. The book's bibliography is a page of its own, so each
entry gets a line "Cited in Chapter 1 (1, 2, 3); Chapter 4" linking to every place
that cites it, in reading order (HTML builds; in a single-page build the ids of
different chapters collide, so the line is left out there).
"""

from __future__ import annotations

import re
from collections import Counter

from docutils import nodes
from pybtex.plugin import register_plugin
from pybtex.richtext import Text
from pybtex.style.formatting.plain import Style as PlainStyle
from pybtex.style.labels import BaseLabelStyle


def _last(person) -> str:
    return Text.from_latex(
        " ".join(person.prelast_names + person.last_names)
    ).render_as("text")


class AuthorYearLabelStyle(BaseLabelStyle):
    def format_labels(self, sorted_entries):
        labels = []
        for entry in sorted_entries:
            people = entry.persons.get("author") or entry.persons.get("editor") or []
            if not people:
                who = entry.fields.get("title", entry.key)[:20]
            elif len(people) == 1:
                who = _last(people[0])
            elif len(people) == 2:
                who = f"{_last(people[0])} and {_last(people[1])}"
            else:
                who = f"{_last(people[0])} et al."
            labels.append(f"{who}, {entry.fields.get('year', 'n.d.')}")
        counts, seen = Counter(labels), Counter()
        for label in labels:  # "Wu et al., 2018a", "Wu et al., 2018b" when two collide
            if counts[label] > 1:
                seen[label] += 1
                yield label + "abcdefghijklmnopqrstuvwxyz"[seen[label] - 1]
            else:
                yield label


class PlainAuthorYearStyle(PlainStyle):
    default_label_style = "authoryear"


def _short_title(env, docname: str) -> str:
    """'Chapter 3' for a numbered chapter ("3. Batch norm at test time: ..."), else the
    title."""
    title = env.titles[docname].astext() if docname in env.titles else docname
    number = re.match(r"(\d+)\.\s", title)
    if number:
        return f"Chapter {number.group(1)}"
    if docname == env.config.root_doc:
        return "Introduction"
    return title


def _cited_in(app, doctree, docname):
    if app.builder.name not in ("html", "dirhtml"):
        return
    from sphinxcontrib.bibtex.domain import get_docnames

    env = app.env
    domain = env.get_domain("cite")
    here = {
        c.citation_id: c
        for c in domain.citations
        if c.bibliography_key.docname == docname
    }
    if not here:
        return
    order = {doc: i for i, doc in enumerate(get_docnames(env))}
    for citation_node in list(doctree.findall(nodes.citation)):
        ids = citation_node.get("ids") or []
        citation = here.get(ids[0]) if ids else None
        if citation is None:
            continue
        places: dict[str, list[str]] = {}
        for ref in domain.citation_refs:
            if ref.docname != docname and citation.key in {t.key for t in ref.targets}:
                places.setdefault(ref.docname, []).append(ref.citation_ref_id)
        if not places:
            continue
        line = nodes.paragraph(classes=["bn-cited-in"])
        line += nodes.Text("Cited in ")
        for k, doc in enumerate(sorted(places, key=lambda d: order.get(d, len(order)))):
            uri = app.builder.get_relative_uri(docname, doc)
            title = env.titles[doc].astext() if doc in env.titles else doc
            if k:
                line += nodes.Text("; ")
            link = nodes.reference(
                "", "", internal=True, refuri=f"{uri}#{places[doc][0]}", reftitle=title
            )
            link += nodes.Text(_short_title(env, doc))
            line += link
            if len(places[doc]) > 1:
                line += nodes.Text(" (")
                for j, ref_id in enumerate(places[doc]):
                    if j:
                        line += nodes.Text(", ")
                    link = nodes.reference(
                        "",
                        "",
                        internal=True,
                        refuri=f"{uri}#{ref_id}",
                        reftitle=f"{title}, citation {j + 1}",
                    )
                    link += nodes.Text(str(j + 1))
                    line += link
                line += nodes.Text(")")
        citation_node += line


def setup(app):
    app.connect("doctree-resolved", _cited_in)
    register_plugin("pybtex.style.labels", "authoryear", AuthorYearLabelStyle)
    register_plugin("pybtex.style.formatting", "plain_authoryear", PlainAuthorYearStyle)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
