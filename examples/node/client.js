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

/**
 * loadService resolves with { Service, def }: the SwitchboardService client
 * constructor and proto-loader's package definition (the descriptors that
 * checkRequest reads).
 */
function loadService() {
  if (!servicePromise) {
    servicePromise = protoLoader.load(PROTO_FILE, LOADER_OPTIONS).then((def) => {
      const pkg = grpc.loadPackageDefinition(def);
      return { Service: pkg.switchboard.v1.SwitchboardService, def };
    });
  }
  return servicePromise;
}

// What proto-loader does with a request it does not understand, silently:
// a key that is not a field (say listener_id, since fields are camelCase
// here) is dropped, and an enum name it does not know becomes 0, which
// the server then reads as "unspecified". checkRequest turns each of these
// into an error naming the field, and accepts the spellings people use
// from the docs and from grpcurl:
//
//   - a field's proto name (listener_id) as well as its lowerCamelCase
//     name (listenerId), as protojson does;
//   - a google.protobuf.Duration as protojson's string ("5s", "0.25s") or
//     as { seconds, nanos }; a Timestamp as a Date, an RFC 3339 string or
//     { seconds, nanos };
//   - 64-bit integers as numbers or decimal strings;
//   - enums by name ("ACK_CODE_AA") or number.

const DURATION = 'google.protobuf.Duration';
const TIMESTAMP = 'google.protobuf.Timestamp';

function camelCase(name) {
  return name.replace(/_([a-z0-9])/g, (_, c) => c.toUpperCase());
}

// lookupType resolves a descriptor's typeName (proto-loader gives names
// in the same package without it) to its entry in the package definition.
function lookupType(def, typeName) {
  const name = typeName.replace(/^\./, '');
  const entry = def[name] || def[`switchboard.v1.${name}`];
  if (!entry) throw new Error(`proto type ${typeName} is not in the package definition`);
  return [def[name] ? name : `switchboard.v1.${name}`, entry];
}

function seconds(value, path, what) {
  if (typeof value === 'string') {
    const m = /^(-?)(\d+)(?:\.(\d{1,9}))?s$/.exec(value);
    if (m) {
      const sign = m[1] ? -1 : 1;
      return { seconds: String(sign * Number(m[2])), nanos: sign * Number((m[3] || '').padEnd(9, '0')) };
    }
  } else if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
    const extra = Object.keys(value).filter((k) => k !== 'seconds' && k !== 'nanos');
    if (extra.length === 0) return value;
  }
  throw new TypeError(`${path}: a ${what} is "1.5s" or { seconds, nanos }, not ${JSON.stringify(value)}`);
}

function timestamp(value, path) {
  let ms;
  if (value instanceof Date) ms = value.getTime();
  else if (typeof value === 'string') ms = Date.parse(value);
  else return seconds(value, path, 'Timestamp');
  if (Number.isNaN(ms)) throw new TypeError(`${path}: not a time: ${JSON.stringify(value)}`);
  return { seconds: String(Math.floor(ms / 1000)), nanos: (((ms % 1000) + 1000) % 1000) * 1e6 };
}

function checkValue(def, field, value, path) {
  if (field.type === 'TYPE_MESSAGE') {
    const [name] = lookupType(def, field.typeName);
    if (name === DURATION) return seconds(value, path, 'Duration');
    if (name === TIMESTAMP) return timestamp(value, path);
    return checkMessage(def, name, value, path);
  }
  if (field.type === 'TYPE_ENUM') {
    const [name, entry] = lookupType(def, field.typeName);
    const values = entry.type.value;
    if (values.some((v) => v.name === value || v.number === value)) return value;
    throw new TypeError(`${path}: ${JSON.stringify(value)} is not a ${name} (one of ${values.map((v) => v.name).join(', ')})`);
  }
  return value;
}

/**
 * checkMessage returns a copy of value, a plain object for the message
 * type typeName (full name), with the spellings above normalized; it
 * throws a TypeError naming the first field it cannot place.
 */
function checkMessage(def, typeName, value, path) {
  if (value === null || typeof value !== 'object' || Array.isArray(value) || Buffer.isBuffer(value)) {
    throw new TypeError(`${path}: a ${typeName} is an object, not ${JSON.stringify(value)}`);
  }
  const fields = def[typeName].type.field;
  const out = {};
  for (const [key, v] of Object.entries(value)) {
    if (v === undefined) continue;
    const field = fields.find((f) => f.name === key) || fields.find((f) => f.name === camelCase(key));
    const at = `${path}.${key}`;
    if (!field) {
      throw new TypeError(`${at}: ${typeName} has no such field (its fields: ${fields.map((f) => f.name).join(', ')})`);
    }
    if (field.name in out) throw new TypeError(`${at}: ${field.name} is given twice`);
    if (field.label === 'LABEL_REPEATED') {
      if (!Array.isArray(v)) throw new TypeError(`${at}: a repeated field is an array`);
      out[field.name] = v.map((x, i) => checkValue(def, field, x, `${at}[${i}]`));
    } else {
      out[field.name] = checkValue(def, field, v, at);
    }
  }
  return out;
}

/**
 * durationSeconds reads a Duration of a response ({ seconds: '2', nanos:
 * 5e8 }; either part is absent when zero, as every zero field is here) as
 * a number of seconds; undefined when d is unset.
 */
function durationSeconds(d) {
  if (d == null) return undefined;
  return Number(d.seconds || 0) + (d.nanos || 0) / 1e9;
}

/** checkRequest checks and normalizes the request object of RPC method. */
function checkRequest(def, method, request) {
  const m = def['switchboard.v1.SwitchboardService'][method];
  const typeName = `switchboard.v1.${m.requestType.type.name}`;
  return checkMessage(def, typeName, request || {}, method);
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
  constructor(raw, address, def) {
    this.raw = raw;
    this.address = address;
    this.def = def;
  }

  /**
   * call invokes the unary RPC method with a deadline. The request is
   * checked first (checkRequest): a field or enum name that proto-loader
   * would drop or zero rejects the promise with a TypeError instead.
   */
  call(method, request, timeoutMs = CALL_TIMEOUT_MS) {
    return new Promise((resolve, reject) => {
      const req = checkRequest(this.def, method, request);
      const deadline = new Date(Date.now() + timeoutMs);
      this.raw[method](req, { deadline }, (err, response) => (err ? reject(err) : resolve(response)));
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
    const stream = new ReceiveStream(this.raw.Receive(checkRequest(this.def, 'Receive', req)));
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
  const { Service, def } = await loadService();
  const raw = new Service(address, grpc.credentials.createInsecure());
  await new Promise((resolve, reject) => {
    raw.waitForReady(new Date(Date.now() + timeoutMs), (err) =>
      err ? reject(new Error(`connect to Switchboard at ${address}: ${err.message}`)) : resolve());
  });
  return new Switchboard(raw, address, def);
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
  loadService,
  checkRequest,
  durationSeconds,
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
