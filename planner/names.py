"""Forgiving name lookup shared by the model and GPU catalogs."""
from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping

__all__ = ["normalize", "resolve", "suggest"]


def normalize(text: str, drop: Iterable[str] = ()) -> str:
    """Lower-case `text`, remove the words in `drop` and every non-alphanumeric character.

    >>> normalize("LLaMA 7B"), normalize("Llama-2-13B"), normalize("NVIDIA RTX 4090", ["nvidia", "rtx"])
    ('llama7b', 'llama213b', '4090')
    """
    key = str(text).lower()
    for word in drop:
        key = re.sub(rf"\b{re.escape(word)}\b", " ", key)
    return re.sub(r"[^a-z0-9]", "", key)


def suggest(query: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """Closest catalog names to a misspelt `query`, best first."""
    choices = list(choices)
    by_key = {normalize(c): c for c in choices}
    hits = difflib.get_close_matches(normalize(query), list(by_key), n=n, cutoff=0.5)
    return [by_key[h] for h in hits]


def resolve(query: str, index: Mapping[str, str], kind: str, names: Iterable[str],
            drop: Iterable[str] = ()) -> str:
    """Map `query` to a canonical catalog name through `index` (normalized alias -> name).

    Raises ValueError with a "did you mean" list when nothing matches.
    """
    key = normalize(query, drop)
    if key in index:
        return index[key]
    close = suggest(query, names)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    more = (" For a model outside the catalog, give its config.json (--config FILE, or the upload on "
            "Fit check)." if kind == "model" else "")
    names = list(names)
    raise ValueError(f"unknown {kind} {query!r:.80}{hint} (memfit knows {len(names)} {kind}s: the "
                     f"{kind.upper() if kind == 'gpu' else kind.capitalize()} menu of Fit check and "
                     f"`python -m planner {kind}s` list them){more}")
