'use strict';
// peer_test.js: a third-party MLLP client (simple-hl7, from npm) talks to a
// Switchboard listener while a Node gRPC client watches the journal.
//
//   1. StartListener with the plain HL7 ACK policy on 127.0.0.1:0.
//   2. Receive (anonymous stream) filtered to that listener.
//   3. simple-hl7 builds an ADT^A01 and sends it over MLLP.
//   4. Its ACK is AA, MSA-2 is the message's MSH-10.
//   5. The stream delivers the message byte for byte.
//
// It prints a JSON summary on stdout (no payload bytes) and exits 1 if any
// check fails. cmd/switchboard's TestNodePeer runs it against a real
// `switchboard serve`; by hand:
//
//   SWITCHBOARD_ADDR=127.0.0.1:50051 node peer_test.js

const { connectSwitchboard, hl7, mllpSend, hl7Field, Checks, uniqueSuffix, hl7Timestamp } = require('./client');

const WAIT_MS = 10_000;

async function main() {
  const checks = new Checks();
  const summary = { program: 'peer_test', mllp_client: 'simple-hl7', checks: checks.results };
  const sb = await connectSwitchboard();
  const listenerId = `node-peer-${uniqueSuffix()}`;
  try {
    const { listener } = await sb.startListener({
      listenerId,
      config: { address: '127.0.0.1:0', ackPolicy: { hl7: {} } },
    });
    const address = listener.status.boundAddress;
    summary.listener_id = listenerId;
    checks.equal('listener is listening', listener.status.state, 'LISTENER_STATE_LISTENING');

    const stream = await sb.receive({ listenerIds: [listenerId] });
    try {
      // The message, built with simple-hl7's builder: MSH fields 3 to 12.
      const controlId = `NODE${Date.now()}`;
      const msg = new hl7.Message('NODEPEER', 'NODEFAC', 'SWITCHBOARD', 'HOSP', hl7Timestamp(), '',
        ['ADT', 'A01', 'ADT_A01'], controlId, 'P', '2.5');
      msg.addSegment('EVN', 'A01', hl7Timestamp());
      msg.addSegment('PID', '1', '', '12345^^^HOSP^MR', '', 'DOE^JANE');
      const sent = Buffer.from(msg.toString(), 'utf8');
      summary.control_id = controlId;
      checks.equal('built message carries its MSH-10', hl7Field(sent, 'MSH', 10), controlId);

      const reply = await mllpSend(address, msg, WAIT_MS);
      summary.ack_code = hl7Field(reply.raw, 'MSA', 1);
      checks.equal('ACK is AA (MSA-1)', hl7Field(reply.raw, 'MSA', 1), 'AA');
      checks.equal('ACK answers the message (MSA-2 = MSH-10)', hl7Field(reply.raw, 'MSA', 2), controlId);
      checks.equal('ACK message type (MSH-9)', hl7Field(reply.raw, 'MSH', 9), 'ACK^A01^ACK');
      checks.equal("simple-hl7's parse agrees (MSA-1)", reply.parsed.getSegment('MSA').getField(1), 'AA');

      const got = await stream.next(WAIT_MS);
      summary.sequence = got.sequence;
      checks.equal('stream: listener', got.listenerId, listenerId);
      checks.equal('stream: kind', got.kind, 'RECORD_KIND_MESSAGE');
      checks.equal('stream: control id', got.controlId, controlId);
      checks.equal('stream: message type', got.messageType, 'ADT^A01^ADT_A01');
      checks.sameBytes('stream: payload byte for byte', got.payload, sent);
    } finally {
      stream.cancel();
    }
  } finally {
    await sb.stopListener({ listenerId }).catch((err) => checks.check('StopListener', false, err.message));
    sb.close();
  }
  summary.ok = checks.ok;
  return summary;
}

main().then(
  (summary) => {
    console.log(JSON.stringify(summary));
    process.exit(summary.ok ? 0 : 1);
  },
  (err) => {
    console.log(JSON.stringify({ program: 'peer_test', ok: false, error: err.message, code: err.code }));
    process.exit(1);
  },
);
