#!/usr/bin/env python3
"""hl7_peer.py: Switchboard against python-hl7 (Debian's python3-hl7), an
MLLP implementation nobody on the project wrote, in both directions.

  1. mllp_send, python-hl7's command-line client, sends an ADT^A01 to a
     Switchboard listener (HL7 ACK policy); its printed ACK, parsed with
     hl7.parse, is AA for the message's MSH-10.
  2. python-hl7's asyncio client (hl7.mllp.open_hl7_connection) sends
     another; the ACK its HL7StreamReader parses is AA for that MSH-10.
  3. A Receive stream on the listener gets both messages, byte for byte.
  4. python-hl7's asyncio MLLP server (hl7.mllp.start_hl7_server) is the
     peer of a Switchboard connection: Switchboard sends two messages; the
     server parses each and answers with Message.create_ack, AA for the
     first and AE for the second. Send reports ACCEPTED with AA, then
     REJECTED with AE, each for the right MSH-10.

It prints a JSON summary (no payload bytes) and exits 1 if any check fails.
cmd/switchboard's TestPythonHL7Peer runs it against a real serve; by hand
(after ./gen.sh):

  SWITCHBOARD_ADDR=127.0.0.1:50051 /usr/bin/python3 hl7_peer.py
"""

import asyncio
import os
import shutil
import subprocess
import tempfile

import hl7
import hl7.mllp
from google.protobuf import duration_pb2

from switchboard_client import Checks, Receive, connect, enum_name, hl7_timestamp, pb, unique_suffix

VT, FS, CR = b"\x0b", b"\x1c", b"\r"
WAIT = 10.0  # seconds, for every wait on a peer


def adt(control_id, sender):
    """An ADT^A01 with MSH-10 control_id, segments ended by CR."""
    return (
        f"MSH|^~\\&|{sender}|PYFAC|SWITCHBOARD|HOSP|{hl7_timestamp()}||ADT^A01^ADT_A01|{control_id}|P|2.5\r"
        f"EVN|A01|{hl7_timestamp()}\r"
        "PID|1||12345^^^HOSP^MR||DOE^JANE\r"
    )


def check_ack(checks, who, ack, code, control_id):
    """Check an hl7.Message parsed by python-hl7: MSA-1 is code and MSA-2 is
    control_id, MSH-9 an ACK."""
    checks.equal(f"{who}: ACK code (MSA-1, python-hl7's parse)", str(ack.extract_field("MSA", 1, 1)), code)
    checks.equal(f"{who}: ACK answers the message (MSA-2)", str(ack.extract_field("MSA", 1, 2)), control_id)
    checks.equal(f"{who}: ACK message type (MSH-9.1)", str(ack.extract_field("MSH", 1, 9, 1, 1)), "ACK")


def mllp_send(checks, address, control_id):
    """Step 1: the mllp_send command; returns the payload it put on the wire."""
    host, port = address.rsplit(":", 1)
    message = adt(control_id, "MLLPSEND")
    exe = shutil.which("mllp_send")
    if not checks.check("mllp_send is installed", exe is not None, "mllp_send not on PATH (apt-get install python3-hl7)"):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "adt.hl7")
        with open(path, "wb") as f:
            f.write(VT + message.encode() + FS + CR)  # mllp_send reads framed messages
        out = subprocess.run([exe, "--port", port, "--file", path, host], capture_output=True, timeout=30)
    checks.equal("mllp_send: exit status", out.returncode, 0)
    # It prints each reply as read from the socket (framing included), then a newline.
    reply = out.stdout.removesuffix(b"\n")
    framed = reply.startswith(VT) and reply.endswith(FS + CR)
    checks.check("mllp_send: reply is one MLLP frame", framed, f"{len(reply)} bytes, framed {framed}")
    if framed:
        check_ack(checks, "mllp_send", hl7.parse(reply[1:-2].decode()), "AA", control_id)
    # read_stream strips VT and CR from both ends of each message it sends.
    return message.encode().strip(VT + CR)


async def asyncio_client(checks, address, control_id):
    """Step 2: hl7.mllp.open_hl7_connection; returns the payload it wrote."""
    host, port = address.rsplit(":", 1)
    message = hl7.parse(adt(control_id, "PYASYNC"))
    reader, writer = await hl7.mllp.open_hl7_connection(host, int(port))
    try:
        writer.writemessage(message)
        await writer.drain()
        ack = await asyncio.wait_for(reader.readmessage(), WAIT)
        check_ack(checks, "asyncio client", ack, "AA", control_id)
    finally:
        writer.close()
        await writer.wait_closed()
    return str(message).encode("ascii")


async def asyncio_server(checks, sb, conn_id):
    """Step 4: hl7.mllp.start_hl7_server as the peer of a Switchboard connection."""
    answers = ["AA", "AE"]
    seen = []

    async def handle(reader, writer):
        try:
            while answers:
                msg = await reader.readmessage()
                seen.append(str(msg.extract_field("MSH", 1, 10)))
                code = answers.pop(0)
                writer.writemessage(msg.create_ack(code, message_id=f"ACK{len(seen)}"))
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    server = await hl7.mllp.start_hl7_server(handle, "127.0.0.1", 0)
    loop = asyncio.get_running_loop()
    try:
        port = server.sockets[0].getsockname()[1]
        conn = pb.ConnectionConfig(address=f"127.0.0.1:{port}", ack_timeout=duration_pb2.Duration(seconds=5))
        await loop.run_in_executor(None, lambda: sb.Connect(pb.ConnectRequest(connection_id=conn_id, config=conn), timeout=10))
        try:
            for code, outcome in (("AA", "SEND_OUTCOME_ACCEPTED"), ("AE", "SEND_OUTCOME_REJECTED")):
                control_id = f"PYSRV{code}{unique_suffix()}"
                payload = adt(control_id, "SWITCHBOARD").encode()
                req = pb.SendRequest(connection_id=conn_id, payload=payload)
                # Send blocks until the server (on this event loop) answers.
                sent = await loop.run_in_executor(None, lambda: sb.Send(req, timeout=10))
                who = f"asyncio server {code}"
                checks.fact(f"server_{code.lower()}_control_id", control_id)
                checks.equal(f"{who}: Send outcome", enum_name(pb.SendOutcome, sent.outcome), outcome)
                checks.equal(f"{who}: Send ACK code", enum_name(pb.AckCode, sent.ack.code), f"ACK_CODE_{code}")
                checks.equal(f"{who}: Send ACK control id", sent.ack.control_id, control_id)
                checks.equal(f"{who}: the server parsed the message's MSH-10", seen[-1] if seen else None, control_id)
                # The ACK as Switchboard got it, parsed by python-hl7 too.
                check_ack(checks, f"{who} (Switchboard's copy)", hl7.parse(sent.ack.payload.decode()), code, control_id)
        finally:
            await loop.run_in_executor(None, lambda: sb.Disconnect(pb.DisconnectRequest(connection_id=conn_id), timeout=10))
    finally:
        server.close()
        await server.wait_closed()


def main(checks):
    channel, sb = connect()
    listener_id = f"py-hl7-{unique_suffix()}"
    with channel:
        resp = sb.StartListener(
            pb.StartListenerRequest(
                listener_id=listener_id,
                config=pb.ListenerConfig(address="127.0.0.1:0", ack_policy=pb.AckPolicy(hl7=pb.Hl7AckPolicy())),
            ),
            timeout=10,
        )
        address = resp.listener.status.bound_address
        checks.fact("listener_id", listener_id)
        try:
            with Receive(sb, pb.ReceiveRequest(listener_ids=[listener_id])) as stream:
                sent = []
                cid = f"PYCLI{unique_suffix()}"
                checks.fact("mllp_send_control_id", cid)
                wire = mllp_send(checks, address, cid)
                if wire is not None:
                    sent.append((cid, wire))
                cid = f"PYAIO{unique_suffix()}"
                checks.fact("asyncio_client_control_id", cid)
                sent.append((cid, asyncio.run(asyncio_client(checks, address, cid))))
                for cid, wire in sent:
                    got = stream.next()
                    checks.equal(f"stream: control id of {cid}", got.control_id, cid)
                    checks.same_bytes(f"stream: payload of {cid} byte for byte", got.payload, wire)
        finally:
            sb.StopListener(pb.StopListenerRequest(listener_id=listener_id), timeout=10)
        asyncio.run(asyncio_server(checks, sb, f"py-hl7-out-{unique_suffix()}"))


if __name__ == "__main__":
    checks = Checks("hl7_peer.py")
    try:
        main(checks)
    except Exception as err:  # the summary says what failed; exit 1
        checks.finish(err)
    checks.finish()
