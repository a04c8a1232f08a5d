'use strict';
// frictions.js: what tripped up the first Node client written against
// proto/, checked to be a non-event with client.js.
//
//   - Plain proto-loader defaults drop fields silently: with keepCase off
//     (camelCase names), a request spelled with proto names (listener_id)
//     loses them. client.js accepts both spellings, and an unknown field
//     is a TypeError naming it, before anything is sent.
//   - An unknown enum name becomes 0 (unspecified) silently: here it is a
//     TypeError listing the valid names. Responses carry enum names.
//   - Durations must be { seconds, nanos } objects: here protojson's "5s"
//     works too; anything else is a TypeError. They read back as objects
//     whose zero parts are absent (defaults: false), which
//     durationSeconds() reads.
//   - 64-bit integers (sequences) come back as decimal strings, never as
//     rounded numbers; an optional field (start_sequence) is sent only when
//     given, so 1 means 1.
//   - buf/validate/validate.proto resolves from proto/ (includeDirs), so
//     loading the API needs nothing generated.
//
// It prints a JSON summary on stdout and exits 1 if any check fails.
// cmd/switchboard's TestNodeFrictions runs it against a real serve; by hand:
//
//   SWITCHBOARD_ADDR=127.0.0.1:50051 node frictions.js

const { connectSwitchboard, Checks, durationSeconds, uniqueSuffix, hl7Timestamp } = require('./client');

// rejects checks that fn() throws (or rejects with) a TypeError whose
// message contains want.
async function rejects(checks, name, fn, want) {
  try {
    await fn();
    checks.check(name, false, 'no error');
  } catch (err) {
    checks.check(name, err instanceof TypeError && err.message.includes(want), `${err.name}: ${err.message}`);
  }
}

async function main(checks) {
  const sb = await connectSwitchboard();
  const id = `node-frictions-${uniqueSuffix()}`;
  try {
    // Proto names (as in the docs, grpcurl and Python) and a Duration string.
    const { listener } = await sb.startListener({
      listener_id: id,
      config: { address: '127.0.0.1:0', ack_policy: { hl7: {} }, idle_timeout: '90s', frame_timeout: '2.5s' },
    });
    checks.equal('snake_case request fields arrive (listener id)', listener.listenerId, id);
    checks.equal('a oneof set by its proto name arrives (ack_policy.hl7)', listener.config.ackPolicy && listener.config.ackPolicy.kind, 'hl7');
    checks.equal('Duration "90s" arrives as seconds', listener.config.idleTimeout && listener.config.idleTimeout.seconds, '90');
    checks.equal('Duration "2.5s" keeps its nanos', listener.config.frameTimeout && listener.config.frameTimeout.nanos, 500000000);
    checks.equal('enums come back as names', listener.status.state, 'LISTENER_STATE_LISTENING');

    await rejects(checks, 'an unknown field is an error, not dropped',
      () => sb.connect({ connectionId: id, config: { address: listener.status.boundAddress, ack_timout: '5s' } }), 'ack_timout');
    await rejects(checks, 'an unknown enum name is an error, not 0',
      () => sb.receive({ listenerIds: [id], kinds: ['RECORD_KIND_MESAGE'] }), 'RECORD_KIND_MESAGE');
    await rejects(checks, 'a Duration as a bare number is an error',
      () => sb.connect({ connectionId: id, config: { address: listener.status.boundAddress, ackTimeout: 5 } }), 'Duration');

    // One message through, then the journal read from sequence 1.
    const { connection } = await sb.connect({
      connection_id: id,
      config: { address: listener.status.boundAddress, ack_timeout: '5s', connect_timeout: { seconds: 3 } },
    });
    checks.equal('connection is open', connection.status.state, 'CONNECTION_STATE_OPEN');
    try {
      const controlId = `FR${uniqueSuffix()}`;
      const payload = Buffer.from(`MSH|^~\\&|NODE|FR|SB|HOSP|${hl7Timestamp()}||ADT^A01^ADT_A01|${controlId}|P|2.5\rPID|1\r`);
      const sent = await sb.send({ connection_id: id, payload, ack_timeout: '5s' });
      checks.equal('Send outcome is a name', sent.outcome, 'SEND_OUTCOME_ACCEPTED');
      const rt = durationSeconds(sent.roundTrip);
      checks.check('round_trip reads back as a Duration object (durationSeconds reads it)', rt > 0 && rt < 5,
        JSON.stringify(sent.roundTrip));

      // start_sequence is proto3 optional: given, 1 replays from the start;
      // not given, only records stored after the call (none, here).
      const replay = await sb.receive({ start_sequence: '1', stop_at_head: true, listener_ids: [id] });
      const got = await replay.next(10_000);
      replay.cancel();
      checks.equal('the replayed record is the message', got.controlId, controlId);
      checks.check('a sequence (uint64) is a decimal string', typeof got.sequence === 'string' && /^[1-9][0-9]*$/.test(got.sequence),
        JSON.stringify(got.sequence));
      checks.check('receive_time is a Timestamp object', got.receiveTime && typeof got.receiveTime.seconds === 'string',
        JSON.stringify(got.receiveTime));
      const fresh = await sb.receive({ stop_at_head: true, listener_ids: [id] });
      const end = await fresh.ended;
      checks.check('start_sequence unset: only new records (the stream ends at the head with none)',
        end.code === 0 && fresh.queue.length === 0, `status ${end.code}, ${fresh.queue.length} queued`);
    } finally {
      await sb.disconnect({ connection_id: id });
    }
  } finally {
    await sb.stopListener({ listener_id: id });
    sb.close();
  }
}

const checks = new Checks();
const summary = { program: 'frictions.js', checks: checks.results };
main(checks).then(
  () => {
    summary.ok = checks.ok && checks.results.length > 0;
    console.log(JSON.stringify(summary));
    process.exit(summary.ok ? 0 : 1);
  },
  (err) => {
    summary.ok = false;
    summary.error = `${err.name}: ${err.message}`;
    console.log(JSON.stringify(summary));
    process.exit(1);
  },
);
