"""A small Python client of Switchboard's gRPC API, for the examples beside it.

The stubs are generated from the repository's proto/ by gen.sh (into gen/,
or the directory SWITCHBOARD_PY_STUBS names); importing this module puts
that directory on sys.path, so `from switchboard.v1 import switchboard_pb2`
and the stubs' own `from buf.validate import validate_pb2` resolve.

Every call here has a deadline and every wait a bound, so a program built on
it ends instead of hanging when the server or a peer goes quiet. Nothing
here prints payload bytes.
"""

import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
STUBS = os.environ.get("SWITCHBOARD_PY_STUBS") or os.path.join(HERE, "gen")

if not os.path.isfile(os.path.join(STUBS, "switchboard", "v1", "switchboard_pb2.py")):
    sys.exit(
        f"no generated stubs in {STUBS}: run {os.path.join(HERE, 'gen.sh')} first "
        "(it needs protoc >= 3.15 and grpc_python_plugin; see README.md)"
    )
sys.path.insert(0, STUBS)

import grpc  # noqa: E402  (python3-grpcio)
from switchboard.v1 import switchboard_pb2 as pb  # noqa: E402
from switchboard.v1 import switchboard_pb2_grpc as pb_grpc  # noqa: E402

#: Default deadline of a unary call, in seconds.
CALL_TIMEOUT = 10.0


def connect(address=None, timeout=CALL_TIMEOUT):
    """Connect to Switchboard's gRPC address (default: SWITCHBOARD_ADDR, else
    127.0.0.1:50051, serve's default) and return (channel, stub) once the
    channel is ready."""
    address = address or os.environ.get("SWITCHBOARD_ADDR") or "127.0.0.1:50051"
    channel = grpc.insecure_channel(address)
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout)
    except grpc.FutureTimeoutError:
        channel.close()
        raise RuntimeError(f"connect to Switchboard at {address}: not ready within {timeout} s") from None
    return channel, pb_grpc.SwitchboardServiceStub(channel)


class Receive:
    """A Receive stream whose cursor is in place: a message stored after the
    constructor returns is delivered to it. The whole stream has a deadline
    (timeout, seconds), so next() never blocks past it. Use it as a context
    manager, or call cancel()."""

    def __init__(self, stub, request, timeout=30.0):
        self.call = stub.Receive(request, timeout=timeout)
        # The server sends its headers once the cursor is placed.
        self.call.initial_metadata()
        self.pending = []

    def next(self):
        """Return the next ReceivedMessage (grpc.RpcError when the stream ends)."""
        while not self.pending:
            self.pending.extend(next(self.call).messages)
        return self.pending.pop(0)

    def cancel(self):
        self.call.cancel()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cancel()


def enum_name(enum, value):
    """The name of an enum value ("SEND_OUTCOME_ACCEPTED"), or the number."""
    try:
        return enum.Name(value)
    except ValueError:
        return str(value)


def hl7_field(payload, seg, n):
    """Field n of the first segment named seg of an HL7 payload (bytes or
    str), or None. MSH counts as the standard does: MSH-1 is the field
    separator, MSH-10 the control id."""
    text = payload.decode("latin-1") if isinstance(payload, (bytes, bytearray)) else payload
    for line in text.replace("\r\n", "\r").replace("\n", "\r").split("\r"):
        if line[:3] != seg:
            continue
        sep = line[3]
        fields = line.split(sep)
        if seg == "MSH":
            return sep if n == 1 else (fields[n - 1] if n - 1 < len(fields) else None)
        return fields[n] if n < len(fields) else None
    return None


def hl7_timestamp():
    """Now as an HL7 DTM (YYYYMMDDHHMMSS, UTC)."""
    return time.strftime("%Y%m%d%H%M%S", time.gmtime())


def unique_suffix():
    """A short suffix for ids, different for each run."""
    return f"{os.getpid():x}{time.time_ns() // 1_000_000:x}"


def first_difference(got, want):
    """Where two byte strings differ, without their contents; '' if equal."""
    got, want = bytes(got or b""), bytes(want or b"")
    if got == want:
        return ""
    i = 0
    while i < len(got) and i < len(want) and got[i] == want[i]:
        i += 1
    return f"differs at byte {i} (got {len(got)} bytes, want {len(want)})"


class Checks:
    """Named pass/fail results for a program's JSON summary (the shape the
    Go tests read: program, ok, checks, and facts they assert on)."""

    def __init__(self, program):
        self.summary = {"program": program, "ok": False, "checks": [], "facts": {}}

    def check(self, name, ok, detail=""):
        self.summary["checks"].append({"name": name, "ok": True} if ok else {"name": name, "ok": False, "detail": detail})
        return ok

    def equal(self, name, got, want):
        return self.check(name, got == want, f"got {got!r}, want {want!r}")

    def same_bytes(self, name, got, want):
        d = first_difference(got, want)
        return self.check(name, d == "", d)

    def fact(self, key, value):
        """Record something the Go test checks on its own (ids, codes; never payloads)."""
        self.summary["facts"][key] = str(value)

    def finish(self, error=None):
        """Print the summary as one JSON line and exit: 0 when every check
        passed, 1 otherwise."""
        if error is not None:
            self.summary["error"] = f"{type(error).__name__}: {error}"
        self.summary["ok"] = error is None and bool(self.summary["checks"]) and all(
            c["ok"] for c in self.summary["checks"]
        )
        print(json.dumps(self.summary), flush=True)
        sys.exit(0 if self.summary["ok"] else 1)
