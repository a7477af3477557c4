"""Task: what a selector knows about a source or a target (its fingerprint, if any, and its description)."""
from __future__ import annotations

from dataclasses import dataclass

from tfp_mlflow.fingerprint import Fingerprint, validate_keywords, validate_task_name

__all__ = ["Task"]


@dataclass(frozen=True)
class Task:
    """A task as seen by selectors and the ranking.

    Parameters
    ----------
    name : str
        Unique task name.
    keywords : tuple of str
        Modality, anatomy, entities (the ``manual`` selector's input).
    num_images : int
        Size of the task (images); larger sources win ties.
    fingerprint : Fingerprint or None
        ``None`` for tasks known only by description (e.g. the imported reference tasks).
    domain : str
        Imaging domain, informative.
    intrinsic_dim : float or None
        Intrinsic dimension of the data, the ``manual`` selector's second tie-breaker.
    """

    name: str
    keywords: tuple[str, ...] = ()
    num_images: int = 0
    fingerprint: Fingerprint | None = None
    domain: str = ""
    intrinsic_dim: float | None = None

    def __post_init__(self) -> None:
        validate_task_name(self.name)
        object.__setattr__(self, "keywords", validate_keywords(list(self.keywords)))

    @classmethod
    def from_fingerprint(cls, fingerprint: Fingerprint, *, domain: str = "",
                         intrinsic_dim: float | None = None) -> Task:
        """The task a fingerprint describes (name, keywords and size from its metadata)."""
        return cls(name=fingerprint.name, keywords=fingerprint.keywords, num_images=fingerprint.num_images,
                   fingerprint=fingerprint, domain=domain or str(fingerprint.extra.get("domain", "")),
                   intrinsic_dim=intrinsic_dim)
