"""JobStatus: the one status vocabulary shared by the database, the Celery tasks and the CLI."""

from __future__ import annotations

from enum import Enum


class JobStatus(str, Enum):
    PENDING = "pending"  # in the database, not yet handed to a queue or to this process
    SCHEDULED = "scheduled"  # handed to the broker with a start time (sweep --at)
    QUEUED = "queued"  # on the broker, waiting for a worker
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value

    @property
    def is_finished(self) -> bool:
        return self in FINISHED

    @property
    def is_waiting(self) -> bool:
        return self in WAITING

    @property
    def is_retryable(self) -> bool:
        """`sweep resume` re-enqueues these."""
        return self in (JobStatus.FAILED, JobStatus.CANCELLED)


FINISHED = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
WAITING = frozenset({JobStatus.PENDING, JobStatus.SCHEDULED, JobStatus.QUEUED})


class StageStatus(str, Enum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    REUSED = "reused"  # artifact found by content key: nothing recomputed
    SKIPPED = "skipped"  # e.g. benchmark on a machine without a GPU
    FAILED = "failed"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value
