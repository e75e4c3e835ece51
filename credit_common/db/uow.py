"""The unit of work: one session, one transaction. `with uow: ...; uow.commit()`;
leaving the block without commit rolls back."""

from __future__ import annotations

from types import TracebackType
from typing import Self

from sqlalchemy.orm import Session, sessionmaker

from credit_common.calls import check_before_commit


class SqlAlchemyUnitOfWork:
    """Base of each service's unit of work; subclasses attach repositories in
    `_open_repositories` from `self.session`."""

    session: Session

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._session_factory = session_factory

    def _open_repositories(self) -> None:  # pragma: no cover - overridden
        pass

    def __enter__(self) -> Self:
        self.session = self._session_factory()
        self._open_repositories()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.session.rollback()
        finally:
            self.session.close()

    def commit(self) -> None:
        """Commit, unless the call being served is gone (credit_common.calls): then DeadlineExceeded or
        Cancelled, and leaving the block rolls back."""
        check_before_commit()
        self.session.commit()

    def flush(self) -> None:
        self.session.flush()
