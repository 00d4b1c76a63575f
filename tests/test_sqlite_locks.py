"""Opening the ledger a second time in one process must not drop the first connection's
locks. POSIX advisory locks belong to the process and a file: closing ANY descriptor of the
file releases them all (sqlite.org/howtocorrupt.html §2.2). A check that opened the file
with Python's `open()` to read its header did exactly that, after which another process's
`close()` believed itself the last user and deleted the -wal and -shm files under the
live connection: "disk I/O error", then "database disk image is malformed"."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from newsletter.ledger import SqliteLedger


def test_a_second_open_in_one_process_keeps_the_first_ones_locks(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    first = SqliteLedger(path)
    first.suppress("l", "a@example.com", "unsubscribed")
    SqliteLedger(path).close()  # what serve, a feed cache or a test does beside it
    SqliteLedger.for_reading(path).close()  # type: ignore[union-attr]
    other = subprocess.run(
        [sys.executable, "-c", "import sys; from pathlib import Path; "
         "from newsletter.ledger import SqliteLedger; SqliteLedger(Path(sys.argv[1])).close()",
         str(path)], capture_output=True, text=True, check=False)
    assert other.returncode == 0, other.stderr
    assert path.with_name(path.name + "-wal").exists()  # the other process left it alone
    for n in range(50):
        first.suppress("l", f"b{n}@example.com", "unsubscribed")
    assert len(first.suppressed("l")) == 51
    first.close()
    again = SqliteLedger(path)
    assert len(again.suppressed("l")) == 51
    assert again._query("PRAGMA integrity_check") == [("ok",)]
    again.close()
