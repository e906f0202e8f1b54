"""What a bulk insert into an engine reports."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class InsertReport:
    """Outcome of a bulk insert: how many documents went in, and every one that did not, with why."""

    inserted: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (docid, reason)

    @property
    def ok(self) -> bool:
        return not self.failed

    def __iadd__(self, other: "InsertReport") -> "InsertReport":
        self.inserted += other.inserted
        self.failed.extend(other.failed)
        return self

    def summary(self, show: int = 10) -> str:
        text = f"inserted {self.inserted} documents, {len(self.failed)} failed"
        for docid, reason in self.failed[:show]:
            text += f"\n  {docid!r}: {reason}"
        if len(self.failed) > show:
            text += f"\n  ... and {len(self.failed) - show} more"
        return text
