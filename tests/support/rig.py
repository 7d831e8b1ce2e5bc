"""A context manager over a set-up that may fail halfway (network namespaces, servers, clients)."""

from __future__ import annotations

from types import TracebackType

from typing_extensions import Self


class Rig:
    """`with` runs set_up(); leaving, or set_up() failing partway, runs close(), which must undo whatever
    part of set_up() ran, so a failed start leaves no namespace or process behind."""

    def set_up(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.set_up()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()
