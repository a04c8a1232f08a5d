'use strict';
// appack.js: application acknowledgement decided by a Node.js consumer.
//
// A listener with consumer_ack hands the decision of each message's ACK to
// a durable consumer: the message is stored, delivered to the consumer with
// an answer_deadline, and the peer's ACK waits for the consumer's
// AnswerMessage (or, after the timeout or with no stream attached, the
// fallback). The steps:
//
//   1. StartListener on 127.0.0.1:0 with consumer_ack {consumer "decider",
//      timeout 5 s, fallback AR}.
//   2. Receive as consumer "decider"; every message with answer_deadline
//      gets AnswerMessage.
//   3. A third-party MLLP client (simple-hl7) sends an ADT; the decider
//      answers AE with a text and error code 207; the peer's ACK is AE with
//      exactly that MSA-3, and MSA-2 = the sent MSH-10.
//   4. The decider's stream ends; another ADT gets the fallback AR.
//   5. The decider attaches again and answers with a complete payload (an
//      RSP^K22); the peer receives it byte for byte.
//
// Alongside, an anonymous Receive stream learns each message's sequence,
// and GetMessage("in-<sequence>") must show the answer that was sent.
//
// It prints a JSON summary on stdout (no payload bytes). Exit status: 0 all
// checks passed, 1 a check failed or something went wrong, 3 the server
// answered UNIMPLEMENTED (it has no consumer_ack yet; the summary's
// "unimplemented" names the RPC). cmd/switchboard's TestNodeAppAck runs it;
// by hand:
//
//   SWITCHBOARD_ADDR=127.0.0.1:50051 node appack.js

const {
  connectSwitchboard, mllpSend, hl7Field, hl7Segments, Checks, isUnimplemented, withTimeout,
  uniqueSuffix, hl7Timestamp, firstDifference,
} = require('./client');

const CONSUMER = 'decider';
const AE_TEXT = 'Patient 12345 is not known to the decider';
const ERROR_CODE = '207';
const ANSWER_TIMEOUT = { seconds: 5 }; // consumer_ack.timeout
const WAIT_MS = 10_000; // a reply the decider answers, a stream message
const FALLBACK_WAIT_MS = 20_000; // the fallback may wait for the 5 s timeout
const EXIT_UNIMPLEMENTED = 3;

class Unimplemented extends Error {
  constructor(rpc, err) {
    super(`${rpc}: UNIMPLEMENTED: ${err.details}`);
    this.rpc = rpc;
  }
}

// unimplementedAs turns an UNIMPLEMENTED rejection of rpc into Unimplemented.
function unimplementedAs(rpc) {
  return (err) => {
    throw isUnimplemented(err) ? new Unimplemented(rpc, err) : err;
  };
}

function adt(controlId) {
  return `MSH|^~\\&|NODEPEER|NODEFAC|SWITCHBOARD|HOSP|${hl7Timestamp()}||ADT^A01^ADT_A01|${controlId}|P|2.5\r` +
    `EVN|A01|${hl7Timestamp()}\r` +
    'PID|1||12345^^^HOSP^MR||DOE^JANE\r';
}

// rsp is the decider's complete answer to controlId: a query response in
// the shape of RSP^K22 (PDQ), answering with one patient.
function rsp(controlId) {
  return Buffer.from(
    `MSH|^~\\&|DECIDER|SWITCHBOARD|NODEPEER|NODEFAC|${hl7Timestamp()}||RSP^K22^RSP_K21|R${controlId}|P|2.5\r` +
    `MSA|AA|${controlId}\r` +
    'QAK|Q1|OK|IHE PDQ Query^IHE PDQ Query|1\r' +
    'QPD|IHE PDQ Query^IHE PDQ Query|Q1|@PID.3.1^12345\r' +
    'PID|1||12345^^^HOSP^MR||DOE^JANE||19800101|F\r',
    'utf8');
}

function millis(ts) {
  return Number(ts.seconds || 0) * 1000 + Math.floor((ts.nanos || 0) / 1e6);
}

/**
 * Decider is the deciding consumer: while attached, it answers each
 * message that has an answer_deadline with the answer expected for its
 * control id, and reports what happened through answered().
 */
class Decider {
  constructor(sb, listenerId) {
    this.sb = sb;
    this.listenerId = listenerId;
    this.stream = null;
    this.expected = new Map(); // control id -> {answer, resolve, promise}
    this.ignored = 0;
  }

  async attach() {
    this.stream = await this.sb.receive({ consumer: CONSUMER }).catch(unimplementedAs('Receive'));
    this.stream.onMessage((m) => this.onMessage(m));
  }

  /** detach ends the stream and waits until it has ended. */
  async detach() {
    if (!this.stream) return;
    const s = this.stream;
    this.stream = null;
    s.cancel();
    await withTimeout(s.ended, WAIT_MS, 'decider stream end');
  }

  /** expect says what to answer for controlId (an AnswerMessage oneof). */
  expect(controlId, answer) {
    const e = { answer };
    e.promise = new Promise((resolve) => { e.resolve = resolve; });
    this.expected.set(controlId, e);
  }

  /**
   * answered resolves with {message, response} once controlId was
   * delivered and answered, or {message, error}.
   */
  answered(controlId, ms) {
    return withTimeout(this.expected.get(controlId).promise, ms, `decider: delivery of ${controlId}`);
  }

  onMessage(m) {
    const e = m.listenerId === this.listenerId ? this.expected.get(m.controlId) : undefined;
    if (!e || e.done) {
      this.ignored++; // another listener's, or one this run does not answer (step 4's, redelivered)
      return;
    }
    e.done = true;
    if (!m.answerDeadline) {
      e.resolve({ message: m, error: new Error('delivered without answer_deadline: the peer was not waiting for the answer') });
      return;
    }
    const ms = Math.min(Math.max(millis(m.answerDeadline) - Date.now(), 1000), WAIT_MS);
    this.sb.answerMessage({ consumer: CONSUMER, sequence: m.sequence, ...e.answer }, ms)
      .then((response) => e.resolve({ message: m, response }), (error) => e.resolve({ message: m, error }));
  }
}

/** Watcher is an anonymous stream that learns each control id's sequence. */
class Watcher {
  constructor(stream) {
    this.stream = stream;
    this.seqs = new Map();
    this.waiters = new Map();
    stream.onMessage((m) => {
      this.seqs.set(m.controlId, m.sequence);
      const w = this.waiters.get(m.controlId);
      if (w) w(m.sequence);
    });
  }

  sequence(controlId, ms) {
    if (this.seqs.has(controlId)) return Promise.resolve(this.seqs.get(controlId));
    const p = new Promise((resolve) => this.waiters.set(controlId, resolve));
    return withTimeout(p, ms, `stream: ${controlId}`);
  }
}

// recordedAnswer polls GetMessage("in-<seq>") until it carries its answer
// (it is recorded as the ACK is written, so it may trail the peer's read).
async function recordedAnswer(sb, seq) {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const { message } = await sb.getMessage({ messageId: `in-${seq}` });
    if (message.answer && message.answer.sent) return message.answer;
    if (Date.now() > deadline) return message.answer || null;
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function main(summary, checks) {
  const sb = await connectSwitchboard();
  const listenerId = `node-appack-${uniqueSuffix()}`;
  const decider = new Decider(sb, listenerId);
  let watcher;
  summary.listener_id = listenerId;
  try {
    // 1. The listener, its ACKs decided by "decider".
    const { listener } = await sb.startListener({
      listenerId,
      config: {
        address: '127.0.0.1:0',
        ackPolicy: { hl7: {} },
        consumerAck: { consumer: CONSUMER, timeout: ANSWER_TIMEOUT, fallbackCode: 'ACK_CODE_AR' },
      },
    }).catch(unimplementedAs('StartListener'));
    const address = listener.status.boundAddress;
    checks.equal('1: listener keeps consumer_ack', (listener.config.consumerAck || {}).consumer, CONSUMER);

    // A server without application ACKs may take the config and ignore it;
    // AnswerMessage tells. For a sequence never stored it must refuse
    // (NOT_AWAITING_ANSWER), never succeed.
    const probe = await sb.answerMessage({ consumer: CONSUMER, sequence: '18446744073709551615', ack: { code: 'ACK_CODE_AA' } })
      .then(() => null, (err) => err);
    if (isUnimplemented(probe)) throw new Unimplemented('AnswerMessage', probe);
    checks.check('1: AnswerMessage refuses a sequence never stored', probe !== null, 'it returned OK');

    watcher = new Watcher(await sb.receive({ listenerIds: [listenerId] }));

    // 2. The decider attaches.
    await decider.attach();

    // 3. AE with a text and an error code.
    const idAE = `AE${Date.now()}`;
    decider.expect(idAE, { ack: { code: 'ACK_CODE_AE', text: AE_TEXT, errorCode: ERROR_CODE } });
    const [ae, aeDecided] = await Promise.all([
      mllpSend(address, adt(idAE), WAIT_MS),
      decider.answered(idAE, WAIT_MS),
    ]);
    summary.step3 = { control_id: idAE, ack_code: hl7Field(ae.raw, 'MSA', 1) };
    checks.equal('3: ACK is AE (MSA-1)', hl7Field(ae.raw, 'MSA', 1), 'AE');
    checks.equal('3: MSA-2 = sent MSH-10', hl7Field(ae.raw, 'MSA', 2), idAE);
    checks.equal('3: MSA-3 = the answer text', hl7Field(ae.raw, 'MSA', 3), AE_TEXT);
    const err = ae.raw.toString('latin1').split('\r').find((l) => l.startsWith('ERR'));
    checks.check('3: ERR segment with the error code', err !== undefined && err.includes(ERROR_CODE),
      `segments ${hl7Segments(ae.raw).join(',')}`);
    checkDecided(checks, '3', aeDecided, 'ACK_CODE_AE', ae.raw);
    if (aeDecided.response) checks.equal('3: answer text', aeDecided.response.answer.text, AE_TEXT);
    await checkRecorded(checks, '3', sb, await watcher.sequence(idAE, WAIT_MS), { code: 'ACK_CODE_AE', fallback: false, sent: ae.raw });

    // 4. No decider: the fallback AR.
    await decider.detach();
    const idAR = `AR${Date.now()}`;
    const ar = await mllpSend(address, adt(idAR), FALLBACK_WAIT_MS);
    summary.step4 = { control_id: idAR, ack_code: hl7Field(ar.raw, 'MSA', 1) };
    checks.equal('4: fallback ACK is AR (MSA-1)', hl7Field(ar.raw, 'MSA', 1), 'AR');
    checks.equal('4: MSA-2 = sent MSH-10', hl7Field(ar.raw, 'MSA', 2), idAR);
    await checkRecorded(checks, '4', sb, await watcher.sequence(idAR, WAIT_MS), { code: 'ACK_CODE_AR', fallback: true, sent: ar.raw });

    // 5. The decider is back and answers with a complete response.
    await decider.attach();
    const idRSP = `Q${Date.now()}`;
    const response = rsp(idRSP);
    decider.expect(idRSP, { payload: response });
    const [got, rspDecided] = await Promise.all([
      mllpSend(address, adt(idRSP), WAIT_MS),
      decider.answered(idRSP, WAIT_MS),
    ]);
    summary.step5 = { control_id: idRSP, message_type: hl7Field(got.raw, 'MSH', 9), bytes: got.raw.length };
    checks.sameBytes('5: the peer got the payload byte for byte', got.raw, response);
    checkDecided(checks, '5', rspDecided, undefined, response);
    await checkRecorded(checks, '5', sb, await watcher.sequence(idRSP, WAIT_MS), { sent: response });
    summary.decider_ignored = decider.ignored;
  } finally {
    await decider.detach().catch(() => {});
    if (watcher) watcher.stream.cancel();
    await sb.stopListener({ listenerId }).catch((e) => checks.check('StopListener', false, e.message));
    sb.close();
  }
}

// checkDecided checks the decider's AnswerMessage: delivered with a
// deadline, written, and what it says was sent is what the peer got.
function checkDecided(checks, step, decided, code, peerGot) {
  if (!checks.check(`${step}: decider answered`, !decided.error, decided.error && decided.error.message)) return;
  const { written, answer } = decided.response;
  checks.equal(`${step}: AnswerMessage written`, written, true);
  if (!checks.check(`${step}: AnswerMessage returns the answer`, answer != null, 'no answer')) return;
  if (code) checks.equal(`${step}: answer code`, answer.code, code);
  checks.sameBytes(`${step}: answer.sent is what the peer got`, answer.sent, peerGot);
}

// checkRecorded checks GetMessage("in-<seq>").answer.
async function checkRecorded(checks, step, sb, seq, want) {
  const answer = await recordedAnswer(sb, seq);
  if (!checks.check(`${step}: GetMessage shows the answer`, answer != null, `in-${seq} has no answer`)) return;
  if (want.code) checks.equal(`${step}: recorded code`, answer.code, want.code);
  if (want.fallback !== undefined) checks.equal(`${step}: recorded fallback`, Boolean(answer.fallback), want.fallback);
  checks.equal(`${step}: recorded written`, Boolean(answer.written), true);
  checks.check(`${step}: recorded sent is what the peer got`, firstDifference(answer.sent, want.sent) === '',
    firstDifference(answer.sent, want.sent));
}

const checks = new Checks();
const summary = { program: 'appack', mllp_client: 'simple-hl7', checks: checks.results };
main(summary, checks).then(
  () => {
    summary.ok = checks.ok;
    console.log(JSON.stringify(summary));
    process.exit(summary.ok ? 0 : 1);
  },
  (err) => {
    summary.ok = false;
    summary.error = err.message;
    if (err instanceof Unimplemented) summary.unimplemented = err.rpc;
    console.log(JSON.stringify(summary));
    process.exit(err instanceof Unimplemented ? EXIT_UNIMPLEMENTED : 1);
  },
);
