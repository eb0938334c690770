"""What a derived store holds that MongoDB's raw records do not imply, counted per store.

pipeline.md, "Derived stores agree with MongoDB": every derived store is compared with what the raw
records imply, document by document and page by page (never loading a store whole): `missing`
(implied, not stored), `extra` (stored, not implied), `different` (stored, with other content).
A full run of a step (a rebuild, a store found lost, `sentencify verify --repair`) computes the same
comparison and writes the differences; `sentencify verify` without `--repair` only counts them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

KINDS = ("missing", "extra", "different")
SAMPLES = 5  # ids kept per kind: enough to look one up, never a store's worth

T = TypeVar("T")


@dataclass
class Drift:
    """One derived store's differences from what MongoDB implies (counts, and a few ids of each)."""

    store: str
    missing: int = 0
    extra: int = 0
    different: int = 0
    samples: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in KINDS})

    def add(self, kind: str, ids: Iterable[Any]) -> None:
        """Count `ids` as `kind` (one of KINDS), keeping the first SAMPLES of them."""
        ids = list(ids)
        setattr(self, kind, getattr(self, kind) + len(ids))
        room = SAMPLES - len(self.samples[kind])
        if room > 0:
            self.samples[kind] += [str(i) for i in ids[:room]]

    @property
    def agrees(self) -> bool:
        return self.missing == self.extra == self.different == 0

    @property
    def total(self) -> int:
        return self.missing + self.extra + self.different

    def as_dict(self, samples: bool = True) -> dict[str, Any]:
        """`{"store", "missing", "extra", "different", "samples"}`: what `verify --json` prints per
        store. `samples=False`: the counts only, for what is stored (an id can name a person, and an
        erasure must find nothing of it: pipeline.md, "Personal data")."""
        out: dict[str, Any] = {"store": self.store, "missing": self.missing, "extra": self.extra, "different": self.different}
        if samples:
            out["samples"] = {k: v for k, v in self.samples.items() if v}
        return out

    def line(self) -> str:
        """One line for people: `store: agrees`, or the counts with a few ids each."""
        if self.agrees:
            return f"{self.store}: agrees"
        parts = [
            f"{getattr(self, k)} {k}" + (f" (e.g. {', '.join(self.samples[k][:3])})" if self.samples[k] else "")
            for k in KINDS
            if getattr(self, k)
        ]
        return f"{self.store}: " + "; ".join(parts)


def pages(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """`items` (a cursor, say) in lists of at most `size`, streamed: at most one page is held."""
    page: list[T] = []
    for item in items:
        page.append(item)
        if len(page) >= size:
            yield page
            page = []
    if page:
        yield page
