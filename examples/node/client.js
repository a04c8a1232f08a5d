'use strict';
// A small Node.js client of Switchboard's gRPC API, and an MLLP peer built
// on a third-party HL7 library (simple-hl7), for the examples beside it.
//
// The API is loaded at run time from the repository's proto/ directory, so
// nothing is generated: includeDirs lets switchboard.proto import
// buf/validate/validate.proto from proto/buf/validate/, and proto-loader
// brings the google/protobuf well-known types itself.
//
// Every call here has a deadline and every wait a timeout, so a program
// built on it ends instead of hanging when the server or a peer goes quiet.
// Nothing here logs payload bytes.

const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const hl7 = require('simple-hl7');

const PROTO_ROOT = path.join(__dirname, '..', '..', 'proto');
const PROTO_FILE = path.join(PROTO_ROOT, 'switchboard', 'v1', 'switchboard.proto');

// How messages look in JavaScript: fields in lowerCamelCase, enums as
// their names ("ACK_CODE_AA"), 64-bit integers as decimal strings, bytes as
// Buffers, unset fields absent (so "is it set?" is a plain check), and the
// name of the field set in each oneof in a virtual property (answer: "ack").
const LOADER_OPTIONS = {
  includeDirs: [PROTO_ROOT],
  keepCase: false,
  longs: String,
  enums: String,
  bytes: Buffer,
  defaults: false,
  oneofs: true,
};

/** Default deadline of a unary call, in milliseconds. */
const CALL_TIMEOUT_MS = 10_000;

let servicePromise;

/** loadService returns the SwitchboardService client constructor. */
function loadService() {
  if (!servicePromise) {
    servicePromise = protoLoader.load(PROTO_FILE, LOADER_OPTIONS).then((def) => {
      const pkg = grpc.loadPackageDefinition(def);
      return pkg.switchboard.v1.SwitchboardService;
    });
  }
  return servicePromise;
}

/**
 * withTimeout resolves or rejects as promise does, or rejects with an Error
 * naming what when ms pass first. onTimeout, if given, runs then (to cancel
 * whatever the promise waits for).
 */
function withTimeout(promise, ms, what, onTimeout) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => {
      if (onTimeout) onTimeout();
      reject(new Error(`${what}: no result within ${ms} ms`));
    }, ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Switchboard is a connected client. Unary RPCs are methods taking the
 * request object and an optional deadline in milliseconds, returning a
 * promise of the response; a failed call rejects with grpc-js's error
 * (err.code is a grpc.status value, err.details the server's message).
 */
class Switchboard {
  constructor(raw, address) {
    this.raw = raw;
    this.address = address;
  }

  /** call invokes the unary RPC method with a deadline. */
  call(method, request, timeoutMs = CALL_TIMEOUT_MS) {
    return new Promise((resolve, reject) => {
      const deadline = new Date(Date.now() + timeoutMs);
      this.raw[method](request, { deadline }, (err, response) => (err ? reject(err) : resolve(response)));
    });
  }

  startListener(req, ms) { return this.call('StartListener', req, ms); }
  stopListener(req, ms) { return this.call('StopListener', req, ms); }
  connect(req, ms) { return this.call('Connect', req, ms); }
  disconnect(req, ms) { return this.call('Disconnect', req, ms); }
  send(req, ms) { return this.call('Send', req, ms); }
  ack(req, ms) { return this.call('Ack', req, ms); }
  answerMessage(req, ms) { return this.call('AnswerMessage', req, ms); }
  getMessage(req, ms) { return this.call('GetMessage', req, ms); }
  getConsumer(req, ms) { return this.call('GetConsumer', req, ms); }

  /**
   * receive opens a Receive stream and resolves once the server has sent
   * its headers, that is once the stream's cursor is in place: a message
   * stored after that is delivered to it. See ReceiveStream.
   */
  async receive(req, timeoutMs = CALL_TIMEOUT_MS) {
    const stream = new ReceiveStream(this.raw.Receive(req));
    await withTimeout(stream.ready, timeoutMs, 'Receive: stream headers', () => stream.cancel());
    return stream;
  }

  /** close closes the channel. */
  close() {
    this.raw.close();
  }
}

/**
 * ReceiveStream wraps a Receive call. Either read it with next(), or give
 * onMessage a handler; messages that arrive before either are queued.
 * ended is a promise of the stream's end: it resolves with the final
 * status (an object with code and details; grpc.status.CANCELLED after
 * cancel()).
 */
class ReceiveStream {
  constructor(call) {
    this.call = call;
    this.queue = [];
    this.waiters = [];
    this.handler = null;
    this.status = null;
    this.ready = new Promise((resolve, reject) => {
      call.once('metadata', () => resolve());
      call.once('error', reject);
    });
    this.ended = new Promise((resolve) => {
      call.on('status', (st) => {
        this.status = st;
        for (const w of this.waiters.splice(0)) w.reject(statusError(st));
        resolve(st);
      });
    });
    call.on('error', () => {}); // the status event above reports it
    call.on('data', (resp) => {
      for (const m of resp.messages || []) {
        if (this.handler) this.handler(m);
        else if (this.waiters.length) this.waiters.shift().resolve(m);
        else this.queue.push(m);
      }
    });
  }

  /** next resolves with the next ReceivedMessage, within timeoutMs. */
  next(timeoutMs) {
    if (this.queue.length) return Promise.resolve(this.queue.shift());
    if (this.status) return Promise.reject(statusError(this.status));
    let waiter;
    const p = new Promise((resolve, reject) => {
      waiter = { resolve, reject };
      this.waiters.push(waiter);
    });
    return withTimeout(p, timeoutMs, 'Receive: next message', () => {
      const i = this.waiters.indexOf(waiter);
      if (i >= 0) this.waiters.splice(i, 1);
    });
  }

  /** onMessage hands every message, queued ones first, to fn. */
  onMessage(fn) {
    this.handler = fn;
    for (const m of this.queue.splice(0)) fn(m);
  }

  /** cancel ends the stream from this side; ended then resolves. */
  cancel() {
    this.call.cancel();
  }
}

function statusError(st) {
  const err = new Error(`Receive ended: ${grpc.status[st.code] || st.code}: ${st.details}`);
  err.code = st.code;
  err.details = st.details;
  return err;
}

/**
 * connectSwitchboard connects to the gRPC address, by default the
 * SWITCHBOARD_ADDR environment variable or 127.0.0.1:50051 (serve's
 * default), and resolves once the channel is ready.
 */
async function connectSwitchboard(address = process.env.SWITCHBOARD_ADDR || '127.0.0.1:50051', timeoutMs = CALL_TIMEOUT_MS) {
  const Service = await loadService();
  const raw = new Service(address, grpc.credentials.createInsecure());
  await new Promise((resolve, reject) => {
    raw.waitForReady(new Date(Date.now() + timeoutMs), (err) =>
      err ? reject(new Error(`connect to Switchboard at ${address}: ${err.message}`)) : resolve());
  });
  return new Switchboard(raw, address);
}

/** isUnimplemented tells whether err is a gRPC UNIMPLEMENTED status. */
function isUnimplemented(err) {
  return err != null && err.code === grpc.status.UNIMPLEMENTED;
}

/** splitHostPort splits "host:port" (and "[v6]:port"). */
function splitHostPort(address) {
  const i = address.lastIndexOf(':');
  if (i < 0) throw new Error(`address ${JSON.stringify(address)} has no port`);
  let host = address.slice(0, i);
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  return { host, port: Number(address.slice(i + 1)) };
}

const VT = '\x0b';
const FS_CR = '\x1c\r';

/**
 * mllpSend sends one HL7 message to an MLLP server with simple-hl7's TCP
 * client and resolves with what came back: raw is the reply's payload
 * exactly as received, without the MLLP framing (a Buffer), and parsed is
 * simple-hl7's parse of it. message is a string or a simple-hl7 Message;
 * it is written as message.toString(), framed. The connection is closed
 * afterwards, and after timeoutMs without a reply.
 *
 * simple-hl7 hands its callback only the parsed reply; the raw frame is in
 * the client's responseBuffer during that callback (it is cleared right
 * after), which is where raw comes from. The framing is checked so that a
 * change in the library shows up as an error, not as wrong bytes.
 */
function mllpSend(address, message, timeoutMs = CALL_TIMEOUT_MS) {
  const { host, port } = splitHostPort(address);
  const client = hl7.Server.createTcpClient({ host, port, keepalive: true });
  const p = new Promise((resolve, reject) => {
    client.send(message, (err, parsed) => {
      if (err) {
        reject(new Error(`MLLP send to ${address}: ${err.message}`));
        return;
      }
      const frame = client.responseBuffer;
      if (typeof frame !== 'string' || !frame.startsWith(VT) || !frame.endsWith(FS_CR)) {
        reject(new Error('simple-hl7 did not leave the reply frame in responseBuffer (has the library changed?)'));
        return;
      }
      resolve({ raw: Buffer.from(frame.slice(VT.length, -FS_CR.length), 'utf8'), parsed });
    });
  });
  return withTimeout(p, timeoutMs, `MLLP reply from ${address}`).finally(() => client.close());
}

/**
 * hl7Field returns field n of the first segment named seg in an HL7
 * payload (a Buffer or string), as a string, or undefined. Fields count as
 * in the standard: for MSH, field 1 is the field separator and field 10
 * the control id; for others field 1 is the first after the name.
 */
function hl7Field(payload, seg, n) {
  const text = Buffer.isBuffer(payload) ? payload.toString('latin1') : payload;
  for (const line of text.split(/\r\n|\r|\n/)) {
    if (line.slice(0, 3) !== seg) continue;
    const sep = line[3];
    const fields = line.split(sep); // fields[0] is the segment name
    if (seg === 'MSH') return n === 1 ? sep : fields[n - 1];
    return fields[n];
  }
  return undefined;
}

/** hl7Segments returns the segment names of an HL7 payload in order. */
function hl7Segments(payload) {
  const text = Buffer.isBuffer(payload) ? payload.toString('latin1') : payload;
  return text.split(/\r\n|\r|\n/).filter((l) => l !== '').map((l) => l.slice(0, 3));
}

/**
 * firstDifference describes where two byte strings differ, without
 * showing their contents (payload bytes are never printed); '' if equal.
 */
function firstDifference(got, want) {
  const a = Buffer.from(got || []);
  const b = Buffer.from(want || []);
  if (a.equals(b)) return '';
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return `differs at byte ${i} (got ${a.length} bytes, want ${b.length})`;
}

/**
 * Checks collects named pass/fail results for a program's JSON summary.
 */
class Checks {
  constructor() {
    this.results = [];
  }

  /** check records ok under name; detail says what was seen when not ok. */
  check(name, ok, detail = '') {
    this.results.push(ok ? { name, ok: true } : { name, ok: false, detail });
    return ok;
  }

  /** equal checks that got === want (strings, numbers, booleans). */
  equal(name, got, want) {
    return this.check(name, got === want, `got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
  }

  /** sameBytes checks two byte strings are equal, byte for byte. */
  sameBytes(name, got, want) {
    const d = firstDifference(got, want);
    return this.check(name, d === '', d);
  }

  get ok() {
    return this.results.every((r) => r.ok);
  }

  get failed() {
    return this.results.filter((r) => !r.ok).length;
  }
}

/** uniqueSuffix is a short suffix for ids, different for each run. */
function uniqueSuffix() {
  return `${process.pid.toString(36)}${Date.now().toString(36)}`;
}

/** hl7Timestamp is now as an HL7 DTM (YYYYMMDDHHMMSS, UTC). */
function hl7Timestamp(d = new Date()) {
  return d.toISOString().replace(/[-:T]/g, '').slice(0, 14);
}

module.exports = {
  grpc,
  hl7,
  connectSwitchboard,
  Switchboard,
  ReceiveStream,
  withTimeout,
  isUnimplemented,
  splitHostPort,
  mllpSend,
  hl7Field,
  hl7Segments,
  firstDifference,
  Checks,
  uniqueSuffix,
  hl7Timestamp,
  CALL_TIMEOUT_MS,
};
