"""Workers on several machines: `send --queue` plans an issue and hands batches of its
deliveries to procrastinate (a PostgreSQL task queue); `newsletter worker` delivers them.

The ledger row stays the truth: a worker claims a batch's unsent rows with a lease on the
database's clock, renews it while it sends, and stops before it ends; a batch whose lease
ran out with rows unsent is queued again, and whoever claims it sends only what is unsent.
"""
