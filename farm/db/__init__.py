"""The results database: models, sessions, migrations and read queries.

    from farm import db
    with db.session() as s:
        rows = db.queries.results(s, model="resnet")
"""

from farm.db import queries
from farm.db.session import get_engine, session, upgrade
from farm.db.status import JobStatus, StageStatus

__all__ = ["JobStatus", "StageStatus", "get_engine", "queries", "session", "upgrade"]
