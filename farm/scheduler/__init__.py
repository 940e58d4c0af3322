"""The scheduler: job specs, submit (deduplicated by spec hash), sweeps, cancel.

    from farm.scheduler import JobSpec, submit
    submit(JobSpec(model="resnet", sparsity=0.9))
"""

from farm.db.status import JobStatus
from farm.scheduler.spec import JobSpec
from farm.scheduler.submission import Submitted, submit

__all__ = ["JobSpec", "JobStatus", "Submitted", "submit"]
