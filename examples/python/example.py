#!/usr/bin/env python3
"""example.py: the basic round trip, from Python.

  1. StartListener: an MLLP listener on a free loopback port.
  2. Receive: a stream of what that listener stores.
  3. Connect: an outbound connection, here to the listener itself.
  4. Send: an HL7 message on it, and wait for the listener's ACK.
  5. The Receive stream delivers the message, byte for byte.

Run it against a running `switchboard serve` (after ./gen.sh):

  SWITCHBOARD_ADDR=127.0.0.1:50051 /usr/bin/python3 example.py

It prints what happened (ids, sequence, ACK code; never the payload), then a
JSON summary, removes the listener and connection it made, and exits 1 if
anything did not come back as sent. cmd/switchboard's TestPythonExample runs
it against a real serve.
"""

from google.protobuf import duration_pb2

from switchboard_client import Checks, Receive, connect, enum_name, hl7_timestamp, pb, unique_suffix


def main(checks):
    channel, sb = connect()
    listener_id = f"py-example-{unique_suffix()}"
    with channel:
        # 1. A listener with the defaults: lenient MLLP framing, HL7 ACKs.
        resp = sb.StartListener(
            pb.StartListenerRequest(listener_id=listener_id, config=pb.ListenerConfig(address="127.0.0.1:0")),
            timeout=10,
        )
        address = resp.listener.status.bound_address
        print(f"listener {listener_id} bound to {address}")
        checks.fact("listener_id", listener_id)
        checks.equal("listener is listening", enum_name(pb.ListenerState, resp.listener.status.state), "LISTENER_STATE_LISTENING")
        try:
            # 2. Only messages stored from now on, and only this listener's.
            with Receive(sb, pb.ReceiveRequest(listener_ids=[listener_id])) as stream:
                # 3. An outbound connection to the listener (any MLLP peer would do).
                # A Duration is a message: Duration(seconds=5), or
                # d = duration_pb2.Duration(); d.FromTimedelta(...).
                conn = sb.Connect(
                    pb.ConnectRequest(
                        connection_id=listener_id,
                        config=pb.ConnectionConfig(address=address, ack_timeout=duration_pb2.Duration(seconds=5)),
                    ),
                    timeout=10,
                ).connection
                print(f"connection {conn.connection_id} is {enum_name(pb.ConnectionState, conn.status.state)}")
                try:
                    # 4. Send waits for the peer's acknowledgement; a negative
                    # one is an outcome (REJECTED), not an error.
                    control_id = f"PY{unique_suffix()}"
                    payload = (
                        f"MSH|^~\\&|PYTHON|EXAMPLE|SWITCHBOARD|HOSP|{hl7_timestamp()}||ADT^A01^ADT_A01|{control_id}|P|2.5\r"
                        "EVN|A01\r"
                        "PID|1||12345^^^HOSP^MR||DOE^JANE\r"
                    ).encode()
                    sent = sb.Send(pb.SendRequest(connection_id=listener_id, payload=payload), timeout=10)
                    outcome = enum_name(pb.SendOutcome, sent.outcome)
                    ack_code = enum_name(pb.AckCode, sent.ack.code)
                    print(f"sent {sent.sent_control_id}: {outcome}, ACK {ack_code} for {sent.ack.control_id}")
                    checks.fact("control_id", control_id)
                    checks.fact("outcome", outcome)
                    checks.fact("ack_code", ack_code)
                    checks.equal("Send: outcome", outcome, "SEND_OUTCOME_ACCEPTED")
                    checks.equal("Send: ACK code", ack_code, "ACK_CODE_AA")
                    checks.equal("Send: ACK answers the message (MSA-2)", sent.ack.control_id, control_id)
                    checks.check("Send: round trip measured", sent.HasField("round_trip"), "round_trip unset")

                    # 5. The listener stored it before acknowledging, so it
                    # is on the stream.
                    got = stream.next()
                    print(
                        f"received sequence {got.sequence}: {got.message_type} {got.control_id} "
                        f"from {got.remote_address} on {got.connection_id} ({len(got.payload)} bytes)"
                    )
                    checks.fact("sequence", got.sequence)
                    checks.equal("stream: listener", got.listener_id, listener_id)
                    checks.equal("stream: kind", enum_name(pb.RecordKind, got.kind), "RECORD_KIND_MESSAGE")
                    checks.equal("stream: control id", got.control_id, control_id)
                    checks.equal("stream: message type", got.message_type, "ADT^A01^ADT_A01")
                    checks.same_bytes("stream: payload byte for byte", got.payload, payload)
                finally:
                    sb.Disconnect(pb.DisconnectRequest(connection_id=listener_id), timeout=10)
        finally:
            sb.StopListener(pb.StopListenerRequest(listener_id=listener_id), timeout=10)


if __name__ == "__main__":
    checks = Checks("example.py")
    try:
        main(checks)
    except Exception as err:  # the summary says what failed; exit 1
        checks.finish(err)
    checks.finish()
