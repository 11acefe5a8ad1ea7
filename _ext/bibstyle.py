"""Author-year labels for the bibliography page (loaded from _config.yml).

The chapters cite author-year ("Ioffe and Szegedy, 2015", `bibtex_reference_style:
author_year`); pybtex's ``plain`` style would still label the list [1], [2], ... This
registers ``plain_authoryear``: pybtex's ``plain`` formatting and sorting, with each entry
labelled the way it is cited.
"""

from __future__ import annotations

from collections import Counter

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


def setup(app):
    register_plugin("pybtex.style.labels", "authoryear", AuthorYearLabelStyle)
    register_plugin("pybtex.style.formatting", "plain_authoryear", PlainAuthorYearStyle)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
