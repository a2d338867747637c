"""moto_server with its DynamoDB calls serialised: how the local stack and the tests start the
AWS emulator.

moto 5 runs each request in its own thread. Its TransactWriteItems snapshots every table it
touches (a deep copy) before writing and, when a condition fails, puts the snapshot back: every
write another thread made to those tables in between is silently undone. Under the concurrent
load of the chaos suite (local/tests/it/chaos_suite.rs) that erased jobs already answered 202,
idempotency records (so one key got two jobs) and quota decrements (a leaked in-flight slot).
Real DynamoDB never loses a committed write, so the emulator is made to behave: one DynamoDB
call at a time (SQS, S3 and SES stay concurrent, so long polls do not block it).

Usage: the same arguments as moto_server (`-H 127.0.0.1 -p PORT`).
"""

import sys
import threading

from moto.dynamodb.responses import DynamoHandler

_lock = threading.Lock()
_call_action = DynamoHandler.call_action


def _serialised_call_action(self):
    with _lock:
        return _call_action(self)


DynamoHandler.call_action = _serialised_call_action

from moto.server import main  # noqa: E402  (after the patch, which must precede any request)

if __name__ == "__main__":
    sys.exit(main())
