'use strict';
// example.js: the basic round trip, from Node.js.
//
//   1. StartListener: an MLLP listener on a free loopback port.
//   2. Receive: a stream of what that listener stores.
//   3. Connect: an outbound connection, here to the listener itself.
//   4. Send: an HL7 message on it, and wait for the listener's ACK.
//   5. The Receive stream delivers the message.
//
// Run it against a running `switchboard serve`:
//
//   SWITCHBOARD_ADDR=127.0.0.1:50051 node example.js
//
// It prints what happened (ids, sequence, ACK code; never the payload) and
// removes the listener and connection it made.

const { connectSwitchboard, hl7Timestamp, uniqueSuffix } = require('./client');

async function main() {
  const sb = await connectSwitchboard();
  const id = `node-example-${uniqueSuffix()}`;

  // 1. A listener with the defaults: lenient MLLP framing, HL7 ACKs.
  const { listener } = await sb.startListener({
    listenerId: id,
    config: { address: '127.0.0.1:0' },
  });
  const address = listener.status.boundAddress;
  console.log(`listener ${id} bound to ${address}`);

  try {
    // 2. Only messages stored from now on, and only this listener's.
    const stream = await sb.receive({ listenerIds: [id] });

    // 3. An outbound connection to the listener (any MLLP peer would do).
    const { connection } = await sb.connect({
      connectionId: id,
      config: { address, ackTimeout: { seconds: 5 } },
    });
    console.log(`connection ${connection.connectionId} is ${connection.status.state}`);

    try {
      // 4. Send waits for the peer's acknowledgement; a negative one is an
      // outcome (REJECTED), not an error.
      const controlId = `EX${Date.now()}`;
      const message =
        `MSH|^~\\&|NODE|EXAMPLE|SWITCHBOARD|HOSP|${hl7Timestamp()}||ADT^A01^ADT_A01|${controlId}|P|2.5\r` +
        'EVN|A01\r' +
        'PID|1||12345^^^HOSP^MR||DOE^JANE\r';
      const sent = await sb.send({ connectionId: id, payload: Buffer.from(message) });
      console.log(`sent ${sent.sentControlId}: ${sent.outcome}, ACK ${sent.ack.code} for ${sent.ack.controlId}`);

      // 5. The listener stored it before acknowledging, so it is on the
      // stream (bounded wait).
      const got = await stream.next(10_000);
      console.log(`received sequence ${got.sequence}: ${got.messageType} ${got.controlId} ` +
        `from ${got.remoteAddress} on ${got.connectionId} (${got.payload.length} bytes)`);
      stream.cancel();

      if (sent.outcome !== 'SEND_OUTCOME_ACCEPTED' || got.controlId !== controlId) {
        throw new Error('the round trip did not come back as sent');
      }
    } finally {
      await sb.disconnect({ connectionId: id });
    }
  } finally {
    await sb.stopListener({ listenerId: id });
    sb.close();
  }
}

main().then(
  () => console.log('ok'),
  (err) => {
    console.error(`example failed: ${err.message}`);
    process.exit(1);
  },
);
