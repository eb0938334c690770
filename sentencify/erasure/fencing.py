"""An erasure takes every step's lease by force, so no run in flight publishes the user afterwards.

`StepLease` (sentencify.steps.lease) takes a lease only once it has expired. An erasure cannot wait
for an hourly run that already read the user's records: it takes the lease over at once, which
raises the fencing token (max(previous + 1, MongoDB's time in ms)), and raises the step's token in
Redis and PostgreSQL too. From then on every write of the older run is refused in every store
(sentencify.steps.fence): MongoDB (its transaction's guard finds the lease document changed; a
transaction in flight makes the take-over wait for it or fail and be retried), Redis and
PostgreSQL (a newer token is there), Qdrant (checked before and after each batch; a batch that
raced the take-over asks the step's next run to reconcile every point from MongoDB). The erasure
holds the leases, renewed, until it is done, then releases them; the next run starts from what
MongoDB holds then.
"""

from __future__ import annotations

from contextlib import ExitStack

from sentencify.steps.lease import StepLease


class ForcedLease(StepLease):
    """A step's lease taken whether or not another run holds it (the token still grows, so the
    other run is fenced out). Waits only for a MongoDB transaction that holds the lease document."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.holder = "erasure:" + self.holder

    def _takeable(self) -> dict:
        """Any holder's: the take-over raises the token, which fences that holder out."""
        return {"_id": self.step}


def take_all(stack: ExitStack, db, steps: tuple[str, ...], *, ttl_s: float, wait_s: float = 600.0) -> dict[str, ForcedLease]:
    """Every step's lease, forced, held until `stack` closes (released in reverse order)."""
    leases: dict[str, ForcedLease] = {}
    for step in steps:
        lease = ForcedLease(db, step, ttl_s=ttl_s, wait_s=wait_s)
        stack.enter_context(lease)
        leases[step] = lease
    return leases
