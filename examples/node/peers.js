'use strict';
// peers.js: Switchboard against MLLP implementations from npm that nobody
// on the project wrote, in both directions. Every ACK is read by the peer
// library's own parser.
//
//   1. node-hl7-client (its Client and Connection) sends an ADT^A01 to a
//      Switchboard listener (HL7 ACK policy); the ACK, as node-hl7-client
//      parses it, is AA for the message's MSH-10. A Receive stream gets the
//      message byte for byte.
//   2. simple-hl7's TCP server is the peer of a Switchboard connection:
//      Switchboard sends two messages on it; simple-hl7 parses each and
//      answers with its own ACK, AA for the first and AE for the second.
//      Send reports ACCEPTED (AA), then REJECTED (AE), each for the right
//      MSH-10; Switchboard's copy of each ACK parses with simple-hl7's
//      Parser.
//   3. node-hl7-server (node-hl7-client's companion: node-hl7-client only
//      connects out, so it cannot be the peer Switchboard connects to)
//      answers a Switchboard connection with AA and another with AE. One
//      message per connection: node-hl7-server 2.5.0 never clears its
//      receive buffer, so on a second message it parses the first one
//      again and answers for it (Switchboard reports that ACK as a
//      mismatch, in doubt).
//
// It prints a JSON summary on stdout (no payload bytes) and exits 1 if any
// check fails. cmd/switchboard's TestNodeMLLPPeers runs it against a real
// `switchboard serve`; by hand:
//
//   SWITCHBOARD_ADDR=127.0.0.1:50051 node peers.js

const hl7Client = require('node-hl7-client');
const { Server: Hl7Server } = require('node-hl7-server');
const {
  connectSwitchboard, hl7, withTimeout, splitHostPort, Checks, uniqueSuffix, hl7Timestamp,
} = require('./client');

const WAIT_MS = 10_000;

function adt(controlId, sender) {
  return `MSH|^~\\&|${sender}|NODEFAC|SWITCHBOARD|HOSP|${hl7Timestamp()}||ADT^A01^ADT_A01|${controlId}|P|2.5\r` +
    `EVN|A01|${hl7Timestamp()}\r` +
    'PID|1||12345^^^HOSP^MR||DOE^JANE\r';
}

// 1. node-hl7-client sends to the listener at address; resolves with the
// bytes it wrote (its serialization of the message).
async function nodeHl7ClientSends(checks, address, controlId) {
  const { host, port } = splitHostPort(address);
  const client = new hl7Client.Client({ host, connectionTimeout: WAIT_MS });
  let conn;
  try {
    const reply = new Promise((resolve, reject) => {
      conn = client.createConnection({ port, waitAck: true, maxConnectionAttempts: 3 }, async (res) => resolve(res));
      conn.on('client.error', reject);
    });
    const message = new hl7Client.Message({ text: adt(controlId, 'NODEHL7CLIENT') });
    await conn.sendMessage(message);
    const ack = (await withTimeout(reply, WAIT_MS, 'node-hl7-client: ACK')).getMessage();
    checks.equal("node-hl7-client: ACK code (MSA-1, node-hl7-client's parse)", ack.get('MSA.1').toString(), 'AA');
    checks.equal('node-hl7-client: ACK answers the message (MSA-2)', ack.get('MSA.2').toString(), controlId);
    checks.equal('node-hl7-client: ACK message type (MSH-9.1)', ack.get('MSH.9.1').toString(), 'ACK');
    return Buffer.from(message.toString(), 'utf8');
  } finally {
    if (conn) await conn.close();
    client.closeAll();
  }
}

// sendAndCheck sends one ADT on connection id and checks what Send says
// against code, and Switchboard's copy of the ACK with parse (the peer
// library's parser: returns [MSA-1, MSA-2]).
async function sendAndCheck(checks, sb, who, connectionId, code, parse) {
  const controlId = `${who.replace(/[^A-Za-z]/g, '').toUpperCase().slice(0, 8)}${code}${uniqueSuffix()}`;
  const sent = await sb.send({ connectionId, payload: Buffer.from(adt(controlId, 'SWITCHBOARD')) });
  const outcome = code === 'AA' ? 'SEND_OUTCOME_ACCEPTED' : 'SEND_OUTCOME_REJECTED';
  checks.equal(`${who} ${code}: Send outcome`, sent.outcome, outcome);
  checks.equal(`${who} ${code}: Send ACK code`, sent.ack.code, `ACK_CODE_${code}`);
  checks.equal(`${who} ${code}: Send ACK control id`, sent.ack.controlId, controlId);
  const [msa1, msa2] = parse(sent.ack.payload.toString('utf8'));
  checks.equal(`${who} ${code}: Switchboard's copy of the ACK, parsed by ${who} (MSA-1)`, msa1, code);
  checks.equal(`${who} ${code}: Switchboard's copy of the ACK, parsed by ${who} (MSA-2)`, msa2, controlId);
  return controlId;
}

// 2. simple-hl7's TCP server answers a Switchboard connection.
async function simpleHl7Serves(checks, sb, connectionId) {
  const answers = ['AA', 'AE'];
  const seen = [];
  const server = hl7.Server.createTcpServer((err, req, res) => {
    if (err) {
      checks.check('simple-hl7 server: no error', false, err.message);
      return;
    }
    seen.push(req.msg.header.getField(8).toString()); // MSH-10 (its fields count from MSH-3)
    res.ack.getSegment('MSA').setField(1, answers.shift() || 'AR');
    res.end();
  });
  server.start(0);
  await withTimeout(new Promise((resolve) => server.server.once('listening', resolve)), WAIT_MS, 'simple-hl7 server: listen');
  try {
    const address = `127.0.0.1:${server.server.address().port}`;
    await sb.connect({ connectionId, config: { address, ackTimeout: { seconds: 5 } } });
    try {
      const parser = new hl7.Parser();
      const parse = (text) => {
        const msa = parser.parse(text).getSegment('MSA');
        return [msa.getField(1).toString(), msa.getField(2).toString()];
      };
      for (const code of ['AA', 'AE']) {
        const controlId = await sendAndCheck(checks, sb, 'simple-hl7', connectionId, code, parse);
        checks.equal(`simple-hl7 ${code}: the server parsed the message's MSH-10`, seen[seen.length - 1], controlId);
        checks.fact(`simple_hl7_server_${code.toLowerCase()}_control_id`, controlId);
      }
    } finally {
      await sb.disconnect({ connectionId });
    }
  } finally {
    server.stop();
  }
}

// 3. node-hl7-server answers two Switchboard connections, one message each.
async function nodeHl7ServerServes(checks, sb, connectionId) {
  const server = new Hl7Server({ bindAddress: '127.0.0.1' });
  let answer = 'AA';
  const seen = [];
  const inbound = server.createInbound({ port: 0 }, async (req, res) => {
    seen.push(req.getMessage().get('MSH.10').toString());
    await res.sendResponse(answer);
  });
  await withTimeout(new Promise((resolve) => inbound.once('listen', resolve)), WAIT_MS, 'node-hl7-server: listen');
  try {
    // node-hl7-server has no accessor for the bound port; its net.Server is _socket.
    const address = `127.0.0.1:${inbound._socket.address().port}`;
    const parse = (text) => {
      const ack = new hl7Client.Message({ text });
      return [ack.get('MSA.1').toString(), ack.get('MSA.2').toString()];
    };
    for (const code of ['AA', 'AE']) {
      answer = code;
      const id = `${connectionId}-${code.toLowerCase()}`;
      await sb.connect({ connectionId: id, config: { address, ackTimeout: { seconds: 5 } } });
      try {
        const controlId = await sendAndCheck(checks, sb, 'node-hl7-server', id, code, parse);
        checks.equal(`node-hl7-server ${code}: the server parsed the message's MSH-10`, seen[seen.length - 1], controlId);
        checks.fact(`node_hl7_server_${code.toLowerCase()}_control_id`, controlId);
      } finally {
        await sb.disconnect({ connectionId: id });
      }
    }
  } finally {
    await inbound.close();
  }
}

async function main(checks) {
  const sb = await connectSwitchboard();
  const listenerId = `node-peers-${uniqueSuffix()}`;
  try {
    const { listener } = await sb.startListener({
      listenerId,
      config: { address: '127.0.0.1:0', ackPolicy: { hl7: {} } },
    });
    checks.fact('listener_id', listenerId);
    const stream = await sb.receive({ listenerIds: [listenerId] });
    try {
      const controlId = `NHC${uniqueSuffix()}`;
      checks.fact('node_hl7_client_control_id', controlId);
      const wire = await nodeHl7ClientSends(checks, listener.status.boundAddress, controlId);
      const got = await stream.next(WAIT_MS);
      checks.equal('stream: control id', got.controlId, controlId);
      checks.sameBytes('stream: payload byte for byte', got.payload, wire);
    } finally {
      stream.cancel();
      await sb.stopListener({ listenerId });
    }
    await simpleHl7Serves(checks, sb, `node-simple-${uniqueSuffix()}`);
    await nodeHl7ServerServes(checks, sb, `node-nhs-${uniqueSuffix()}`);
  } finally {
    sb.close();
  }
}

const checks = new Checks();
const summary = { program: 'peers.js', checks: checks.results, facts: {} };
checks.fact = (key, value) => { summary.facts[key] = String(value); };
main(checks).then(
  () => {
    summary.ok = checks.ok && checks.results.length > 0;
    console.log(JSON.stringify(summary));
    process.exit(summary.ok ? 0 : 1);
  },
  (err) => {
    summary.ok = false;
    summary.error = err.message;
    console.log(JSON.stringify(summary));
    process.exit(1);
  },
);
