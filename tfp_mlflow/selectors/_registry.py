"""One registry of selectors, timm-style: factories registered by name, built by :func:`get_selector`."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tfp_mlflow.errors import BadInputError
from tfp_mlflow.selectors._base import Selector

__all__ = ["register_selector", "get_selector", "list_selectors", "describe_selector"]

SelectorFactory = Callable[..., Selector]
_factories: dict[str, SelectorFactory] = {}
_descriptions: dict[str, str] = {}


def register_selector(name: str, description: str) -> Callable[[SelectorFactory], SelectorFactory]:
    """Decorator registering a factory that builds the selector called ``name``."""

    def decorate(factory: SelectorFactory) -> SelectorFactory:
        if name in _factories:
            raise ValueError(f"selector {name!r} is already registered")
        _factories[name] = factory
        _descriptions[name] = description
        return factory

    return decorate


def get_selector(name: str, **kwargs: Any) -> Selector:
    """Build the registered selector ``name`` (keyword arguments go to its factory)."""
    if name not in _factories:
        raise BadInputError(f"unknown selector {name!r}; choose one of {', '.join(list_selectors())} "
                            f"(`tfp selectors` lists them)")
    selector = _factories[name](**kwargs)
    selector.name = name
    return selector


def list_selectors() -> list[str]:
    """Names of all registered selectors, in registration order."""
    return list(_factories)


def describe_selector(name: str) -> str:
    """One-line description of a registered selector."""
    get_selector(name)  # validates the name
    return _descriptions[name]
