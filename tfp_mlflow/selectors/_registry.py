"""One registry of selectors, timm-style: factories registered by name.

Two kinds share it. A **distance** selector (:func:`register_selector`, built by :func:`get_selector`) ranks the
sources for a target by a distance between their fingerprints or keywords. A **learned** selector
(:func:`register_learned_selector`, fitted by :func:`fit_selector`) is fitted from measured transfer outcomes and
orders the sources per scenario, over a distance selector's ranking, where it validates better than the distance
alone (``track-record``). :func:`list_selectors` lists both, or one kind; names are unique across them.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Literal

from tfp_mlflow.errors import BadInputError
from tfp_mlflow.selectors._base import Selector

__all__ = ["register_selector", "register_learned_selector", "get_selector", "fit_selector", "list_selectors",
           "describe_selector", "selector_kind", "selector_needs", "DISTANCE", "LEARNED"]

SelectorFactory = Callable[..., Selector]
Kind = Literal["distance", "learned"]
DISTANCE: Kind = "distance"
LEARNED: Kind = "learned"
_factories: dict[str, SelectorFactory] = {}
#: A learned selector by ``"module:attribute"``: its module (pandas and all) is imported only when it is fitted.
_learned: dict[str, str] = {}
_descriptions: dict[str, str] = {}


def _claim(name: str, description: str) -> None:
    if name in _descriptions:
        raise ValueError(f"selector {name!r} is already registered")
    _descriptions[name] = description


def register_selector(name: str, description: str) -> Callable[[SelectorFactory], SelectorFactory]:
    """Decorator registering a factory that builds the distance selector called ``name``."""

    def decorate(factory: SelectorFactory) -> SelectorFactory:
        _claim(name, description)
        _factories[name] = factory
        return factory

    return decorate


def register_learned_selector(name: str, description: str, fitter: str) -> None:
    """Register the learned selector ``name``; ``fitter`` (``"module:attribute"``) is called with the outcomes."""
    _claim(name, description)
    _learned[name] = fitter


def get_selector(name: str, **kwargs: Any) -> Selector:
    """Build the registered distance selector ``name`` (keyword arguments go to its factory)."""
    if name in _learned:
        raise BadInputError(f"selector {name!r} is learned from measured outcomes, not a distance: recommendations "
                            f"order by it per scenario where it validates (their ordered_by says so), over the "
                            f"distance of a selector such as {next(iter(_factories))}; choose one of "
                            f"{', '.join(list_selectors(DISTANCE))}")
    if name not in _factories:
        raise BadInputError(f"unknown selector {name!r}; choose one of {', '.join(list_selectors(DISTANCE))} "
                            f"(`tfp selectors` lists them)")
    selector = _factories[name](**kwargs)
    selector.name = name
    return selector


def fit_selector(name: str, outcomes: Any, *args: Any, **kwargs: Any) -> Any:
    """Fit the registered learned selector ``name`` from ``outcomes`` (further arguments go to its fitter)."""
    if name not in _learned:
        raise BadInputError(f"selector {name!r} is not learned from outcomes; the learned ones are "
                            f"{', '.join(list_selectors(LEARNED))}")
    module, _, attribute = _learned[name].partition(":")
    return getattr(importlib.import_module(module), attribute)(outcomes, *args, **kwargs)


def list_selectors(kind: Kind | None = None) -> list[str]:
    """Names of the registered selectors of ``kind`` (default: both), in registration order."""
    if kind not in (None, DISTANCE, LEARNED):
        raise BadInputError(f"unknown selector kind {kind!r}; choose {DISTANCE} or {LEARNED}")
    return [*_factories, *_learned] if kind is None else list(_factories if kind == DISTANCE else _learned)


def selector_kind(name: str) -> Kind:
    """``distance`` or ``learned``."""
    if name in _learned:
        return LEARNED
    if name not in _factories:
        get_selector(name)  # the one-line error of an unknown name
    return DISTANCE


def selector_needs(name: str) -> str:
    """What a selector reads: ``fingerprint``, ``keywords`` (``manual``) or ``outcomes`` (a learned one)."""
    if selector_kind(name) == LEARNED:
        return "outcomes"
    return "fingerprint" if get_selector(name).needs_fingerprint else "keywords"


def describe_selector(name: str) -> str:
    """One-line description of a registered selector."""
    selector_kind(name)  # validates the name
    return _descriptions[name]
