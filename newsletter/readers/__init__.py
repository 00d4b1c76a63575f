"""Readers beyond the publisher's file: sign-ups, their own choices, imports.

`subscribers.yaml` is the publisher's and is never written. Everything readers do for
themselves (join, confirm, choose topics, pause, rename, leave) and every import lives in the
database beside the ledger (`store.ReaderStore`); `roster.load_readers` merges both into the
list an issue goes to.
"""
