"""What comes back: bounces, complaints and unsubscribes by mail, and providers' events.

Every source turns what it got into `events.Event` records; `policy.apply_event` is the one
path from an event to the ledger (attribution, replay, soft/hard policy, evidence).
"""
