"""A registry: named entries of one kind (backbones, datasets, preprocessing families,
evaluators), filled by the module that defines each entry (as big_vision's registries are).

Hand-written (a few lines) because big_vision's `Registry` is not a package of its own: taking
it would bring big_vision and its dependencies for one global dict keyed by 'kind.name'.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from wrna_jax.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries by name; `what` is the config field that selects one ('model.backbone'), so a
    wrong name gets an error that says which field is wrong and what the choices are."""

    def __init__(self, what: str, discover: Callable[[], None] | None = None):
        self.what = what
        self._discover = discover
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        """Registers `entry` as `name`; registering a different entry under a taken name fails."""
        if name in self._entries and self._entries[name] != entry:
            raise ValueError(f"{self.what} {name!r} is registered twice.")
        self._entries[name] = entry
        return entry

    def __getitem__(self, name: str) -> T:
        if name not in self._entries and self._discover is not None:
            self._discover()
        if name not in self._entries:
            raise ConfigError(f"Unknown {self.what} {name!r}; valid choices are "
                              f"{', '.join(map(repr, sorted(self._entries)))}.")
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)
