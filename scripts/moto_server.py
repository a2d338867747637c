"""moto_server with its DynamoDB calls serialised: how the local stack and the tests start the
AWS emulator.

moto 5 runs each request in its own thread. Its TransactWriteItems snapshots every table it
touches (a deep copy) before writing and, when a condition fails, puts the snapshot back: every
write another thread made to those tables in between is silently undone. Under the concurrent
load of the chaos suite (local/tests/it/chaos_suite.rs) that erased jobs already answered 202,
idempotency records (so one key got two jobs) and quota decrements (a leaked in-flight slot).
Real DynamoDB never loses a committed write, so the emulator is made to behave: one DynamoDB
call at a time (SQS, S3 and SES stay concurrent, so long polls do not block it), and a canceled
transaction puts back only the items it touched, as DynamoDB's own all-or-nothing does
(local/tests/it/emulator.rs checks that).

Usage: the same arguments as moto_server (`-H 127.0.0.1 -p PORT`).
"""

import copy
import functools
import logging
import sys
import threading

import moto.backends as moto_backends
import moto.dynamodb.models as dynamodb_models
import werkzeug.serving as werkzeug_serving
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.table import Table
from moto.dynamodb.responses import DynamoHandler
from moto.core.utils import unix_time
from moto.moto_server.werkzeug_app import DomainDispatcherApplication
from moto.sqs.models import SQSBackend

_lock = threading.Lock()
_call_action = DynamoHandler.call_action


def _serialised_call_action(self):
    with _lock:
        return _call_action(self)


DynamoHandler.call_action = _serialised_call_action


# TransactWriteItems' snapshot is a deep copy of every table it touches: with 1,000 jobs in the
# table each transaction took seconds (the soak in scripts/chaos-soak.sh crawled to ~5 s per
# create). Under the lock above, only the items the transaction touches can change while it
# runs, so they are all a rollback needs: the tables are no longer copied (moto's own restore
# becomes a no-op) and the touched items are put back instead.
class _TableCopyShim:
    """Stands in for the `copy` module inside moto.dynamodb.models: tables are not copied."""

    @staticmethod
    def deepcopy(value, memo=None):
        if isinstance(value, Table):
            return value
        return copy.deepcopy(value, memo)


def _touched_items(backend, transact_items):
    """(table, hash key, range key, a deep copy of the item or None) per transaction item."""
    touched = []
    for entry in transact_items:
        try:
            op_type, op = next(iter(entry.items()))
            table = backend.tables.get(op.get("TableName"))
            if table is None:
                continue
            if op_type == "Put":
                attrs = op["Item"]
                key = {table.hash_key_attr: attrs[table.hash_key_attr]}
                if table.range_key_attr is not None:
                    key[table.range_key_attr] = attrs[table.range_key_attr]
            else:
                key = op["Key"]
            hash_value, range_value = backend.get_keys_value(table, key)
        except Exception:  # noqa: BLE001  malformed: moto's own validation answers it
            continue
        item = table.get_item(hash_value, range_value)
        touched.append((table, hash_value, range_value, copy.deepcopy(item)))
    return touched


def _restore(touched):
    # Reversed, so an item named twice (moto rejects that, after writing) ends as it was first.
    for table, hash_value, range_value, item in reversed(touched):
        if range_value is not None:
            rows = table.items[hash_value]
            if item is None:
                rows.pop(range_value, None)
            else:
                rows[range_value] = item
        elif item is None:
            table.items.pop(hash_value, None)
        else:
            table.items[hash_value] = item


_transact_write_items = DynamoDBBackend.transact_write_items


def _item_level_transact_write_items(self, transact_items):
    touched = _touched_items(self, transact_items)
    try:
        return _transact_write_items(self, transact_items)
    except Exception:
        _restore(touched)
        raise


dynamodb_models.copy = _TableCopyShim()
DynamoDBBackend.transact_write_items = _item_level_transact_write_items

# Routing a request to its service: moto's dispatcher lists its own package folder (a listdir
# and ~200 isdir calls) and tries every backend's URL patterns, for every request, under one
# global lock; `py-spy` put that at a fifth of the emulator's CPU in the load run
# (scripts/load-test.sh), CPU the segmenter shares on a small machine. The folder does not
# change while the server runs, and a host always maps to the same backend, so both are
# computed once.
_moto_modules = frozenset(moto_backends.list_of_moto_modules())
moto_backends.list_of_moto_modules = lambda: _moto_modules
DomainDispatcherApplication.get_backend_for_host = functools.lru_cache(maxsize=256)(
    DomainDispatcherApplication.get_backend_for_host
)


# ReceiveMessage checks each message it hands out against the queue's retention period through
# GetQueueAttributes' code, which computes every attribute of the queue three times over, and
# with them the approximate message counts, each a pass over the whole queue: work growing with
# the backlog for every message received (~13 % of the emulator's CPU in the chaos suite with a
# few hundred messages queued, py-spy). The period is a plain attribute of the queue.
def _within_retention_period(self, queue_name, message):
    period = self.get_queue(queue_name).message_retention_period
    return period + message.sent_timestamp / 1000 > unix_time()


SQSBackend.is_message_valid_based_on_retention_period = _within_retention_period


class _QuietSuccesses(logging.Filter):
    """Drops werkzeug's line for each 1xx-3xx request (one per call: "POST / 200", another
    ~6 % of the emulator's CPU under load); 4xx and 5xx lines stay in the log."""

    def filter(self, record):
        args = record.args if isinstance(record.args, tuple) else ()
        return not (len(args) >= 2 and str(args[1])[:1] in "123")


logging.getLogger("werkzeug").addFilter(_QuietSuccesses())

# werkzeug writes a response's headers and its body in two sends; with Nagle's algorithm on,
# the body waits for the client's (delayed) ACK of the headers. AWS's endpoints answer without
# such a stall, so the emulator's sockets send at once.
werkzeug_serving.WSGIRequestHandler.disable_nagle_algorithm = True

from moto.server import main  # noqa: E402  (after the patch, which must precede any request)

if __name__ == "__main__":
    sys.exit(main())
