"""Exceptions shared by every layer. The CLI prints any FarmError as one line and exits non-zero."""


class FarmError(Exception):
    """Base of every error farm reports to a user as one clear line."""


class InvalidSpec(FarmError, ValueError):
    """A job or sweep spec that cannot run: unknown model, sparsity out of range, bad bits..."""


class UnknownModel(InvalidSpec):
    """A model name the registry does not know."""


class UnknownDataset(InvalidSpec):
    """A dataset name the registry does not know."""


class DatasetMissing(FarmError):
    """A known dataset whose files are not on this machine; the message says how to get them."""


class CheckpointMismatch(FarmError, ValueError):
    """A checkpoint or compressed file that does not fit the model it is loaded into."""


class ServiceUnavailable(FarmError):
    """The broker or the database cannot be reached."""


class NotFound(FarmError, LookupError):
    """A job, sweep or artifact id that does not exist."""


class Deferred(Exception):
    """A job that a worker runs meets another live job building what it needs: rather than hold
    the worker (and its GPU) idle until that is stored, the attempt ends, uncounted, and the job
    goes back on the queue. Not an error: nothing is reported as failed."""

    def __init__(self, builder: int, stage: str):
        super().__init__(f"waiting for job {builder}")
        self.builder, self.stage = builder, stage


class Cancelled(FarmError):
    """Raised inside a running job when its cancel flag is seen between epochs or stages."""


class NotImplementedStage(FarmError):
    """A pipeline stage whose library is not built yet."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, `timeout`, a container stopping) while a job runs in the CLI's process:
    handled as Ctrl-C is, and recorded as what it was."""
