// Example: the basic round trip, from Java (gRPC Java and protobuf Java
// from Debian's packages; build with build.sh).
//
//   1. StartListener: an MLLP listener on a free loopback port.
//   2. Receive: a stream of what that listener stores, once its cursor is
//      in place (the server's response headers).
//   3. Connect: an outbound connection, here to the listener itself.
//   4. Send: an HL7 message on it, and wait for the listener's ACK.
//   5. The Receive stream delivers the message, byte for byte.
//
// Run it against a running `switchboard serve`:
//
//   ./build.sh && SWITCHBOARD_ADDR=127.0.0.1:50051 java -jar build/example.jar
//
// It prints what happened (ids, sequence, ACK code; never the payload),
// then a JSON summary, removes the listener and connection it made, and
// exits 1 if anything did not come back as sent. cmd/switchboard's
// TestJavaExample runs it against a real serve.

import com.google.gson.Gson;
import com.google.protobuf.ByteString;
import com.google.protobuf.Duration;
import io.grpc.CallOptions;
import io.grpc.Channel;
import io.grpc.ClientCall;
import io.grpc.ClientInterceptor;
import io.grpc.ForwardingClientCall;
import io.grpc.ForwardingClientCallListener;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.Metadata;
import io.grpc.MethodDescriptor;
import io.grpc.stub.StreamObserver;
import java.nio.charset.StandardCharsets;
import java.text.SimpleDateFormat;
import java.util.ArrayList;
import java.util.Date;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TimeZone;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import switchboard.v1.Switchboard.AckCode;
import switchboard.v1.Switchboard.ConnectRequest;
import switchboard.v1.Switchboard.ConnectionConfig;
import switchboard.v1.Switchboard.DisconnectRequest;
import switchboard.v1.Switchboard.ListenerConfig;
import switchboard.v1.Switchboard.ReceiveRequest;
import switchboard.v1.Switchboard.ReceiveResponse;
import switchboard.v1.Switchboard.ReceivedMessage;
import switchboard.v1.Switchboard.SendOutcome;
import switchboard.v1.Switchboard.SendRequest;
import switchboard.v1.Switchboard.SendResponse;
import switchboard.v1.Switchboard.StartListenerRequest;
import switchboard.v1.Switchboard.StartListenerResponse;
import switchboard.v1.Switchboard.StopListenerRequest;
import switchboard.v1.SwitchboardServiceGrpc;

public final class Example {
  private static final long CALL_SECONDS = 10; // deadline of each unary call
  private static final long WAIT_SECONDS = 10; // bound of every wait

  /** The JSON summary the Go test reads: program, ok, checks, facts. */
  private static final class Summary {
    final String program = "Example.java";
    boolean ok;
    String error;
    final List<Map<String, Object>> checks = new ArrayList<>();
    final Map<String, String> facts = new LinkedHashMap<>();

    void check(String name, boolean ok, String detail) {
      Map<String, Object> c = new LinkedHashMap<>();
      c.put("name", name);
      c.put("ok", ok);
      if (!ok) c.put("detail", detail);
      checks.add(c);
    }

    void equal(String name, Object got, Object want) {
      check(name, want.equals(got), "got " + got + ", want " + want);
    }
  }

  /**
   * Captures a call's response headers: Receive's are sent once the
   * stream's cursor is in place, so a message stored after they arrive is
   * delivered to the stream.
   */
  private static final class HeadersInterceptor implements ClientInterceptor {
    final CompletableFuture<Metadata> headers = new CompletableFuture<>();

    @Override
    public <Q, R> ClientCall<Q, R> interceptCall(MethodDescriptor<Q, R> method, CallOptions options, Channel next) {
      return new ForwardingClientCall.SimpleForwardingClientCall<Q, R>(next.newCall(method, options)) {
        @Override
        public void start(Listener<R> listener, Metadata md) {
          super.start(new ForwardingClientCallListener.SimpleForwardingClientCallListener<R>(listener) {
            @Override
            public void onHeaders(Metadata h) {
              headers.complete(h);
              super.onHeaders(h);
            }

            @Override
            public void onClose(io.grpc.Status status, Metadata trailers) {
              headers.completeExceptionally(status.asRuntimeException(trailers));
              super.onClose(status, trailers);
            }
          }, md);
        }
      };
    }
  }

  private static String hl7Timestamp() {
    SimpleDateFormat f = new SimpleDateFormat("yyyyMMddHHmmss");
    f.setTimeZone(TimeZone.getTimeZone("UTC"));
    return f.format(new Date());
  }

  private static SwitchboardServiceGrpc.SwitchboardServiceBlockingStub unary(ManagedChannel ch) {
    return SwitchboardServiceGrpc.newBlockingStub(ch).withDeadlineAfter(CALL_SECONDS, TimeUnit.SECONDS);
  }

  private static void run(Summary s) throws Exception {
    String address = System.getenv().getOrDefault("SWITCHBOARD_ADDR", "127.0.0.1:50051");
    ManagedChannel ch = ManagedChannelBuilder.forTarget(address).usePlaintext().build();
    String suffix = Long.toString(ProcessHandle.current().pid(), 36) + Long.toString(System.currentTimeMillis(), 36);
    String listenerId = "java-example-" + suffix;
    try {
      // 1. A listener with the defaults: lenient MLLP framing, HL7 ACKs.
      StartListenerResponse started = unary(ch).startListener(StartListenerRequest.newBuilder()
          .setListenerId(listenerId)
          .setConfig(ListenerConfig.newBuilder().setAddress("127.0.0.1:0"))
          .build());
      String bound = started.getListener().getStatus().getBoundAddress();
      System.out.println("listener " + listenerId + " bound to " + bound);
      s.facts.put("listener_id", listenerId);
      try {
        // 2. Only messages stored from now on, and only this listener's.
        HeadersInterceptor hi = new HeadersInterceptor();
        BlockingQueue<Object> received = new LinkedBlockingQueue<>();
        io.grpc.Context.CancellableContext streamCtx = io.grpc.Context.current().withCancellation();
        streamCtx.run(() -> SwitchboardServiceGrpc.newStub(ch).withInterceptors(hi)
            .withDeadlineAfter(60, TimeUnit.SECONDS)
            .receive(ReceiveRequest.newBuilder().addListenerIds(listenerId).build(), new StreamObserver<ReceiveResponse>() {
              @Override public void onNext(ReceiveResponse r) { received.addAll(r.getMessagesList()); }
              @Override public void onError(Throwable t) { received.add(t); }
              @Override public void onCompleted() { received.add(new IllegalStateException("Receive ended")); }
            }));
        try {
          hi.headers.get(WAIT_SECONDS, TimeUnit.SECONDS);

          // 3. An outbound connection to the listener (any MLLP peer would do).
          String connectionId = listenerId;
          unary(ch).connect(ConnectRequest.newBuilder()
              .setConnectionId(connectionId)
              .setConfig(ConnectionConfig.newBuilder()
                  .setAddress(bound)
                  .setAckTimeout(Duration.newBuilder().setSeconds(5)))
              .build());
          try {
            // 4. Send waits for the peer's acknowledgement; a negative one
            // is an outcome (REJECTED), not an error.
            String controlId = "JAVA" + suffix;
            byte[] payload = ("MSH|^~\\&|JAVA|EXAMPLE|SWITCHBOARD|HOSP|" + hl7Timestamp() + "||ADT^A01^ADT_A01|"
                + controlId + "|P|2.5\rEVN|A01\rPID|1||12345^^^HOSP^MR||DOE^JANE\r").getBytes(StandardCharsets.US_ASCII);
            SendResponse sent = unary(ch).send(SendRequest.newBuilder()
                .setConnectionId(connectionId)
                .setPayload(ByteString.copyFrom(payload))
                .build());
            System.out.println("sent " + sent.getSentControlId() + ": " + sent.getOutcome() + ", ACK "
                + sent.getAck().getCode() + " for " + sent.getAck().getControlId());
            s.facts.put("control_id", controlId);
            s.facts.put("outcome", sent.getOutcome().name());
            s.facts.put("ack_code", sent.getAck().getCode().name());
            s.equal("Send: outcome", sent.getOutcome(), SendOutcome.SEND_OUTCOME_ACCEPTED);
            s.equal("Send: ACK code", sent.getAck().getCode(), AckCode.ACK_CODE_AA);
            s.equal("Send: ACK answers the message (MSA-2)", sent.getAck().getControlId(), controlId);
            s.check("Send: round trip measured", sent.hasRoundTrip(), "round_trip unset");

            // 5. The listener stored it before acknowledging, so it is on
            // the stream.
            Object next = received.poll(WAIT_SECONDS, TimeUnit.SECONDS);
            if (next == null) throw new IllegalStateException("Receive: no message within " + WAIT_SECONDS + " s");
            if (next instanceof Throwable) throw new IllegalStateException("Receive: " + next, (Throwable) next);
            ReceivedMessage got = (ReceivedMessage) next;
            System.out.println("received sequence " + got.getSequence() + ": " + got.getMessageType() + " "
                + got.getControlId() + " from " + got.getRemoteAddress() + " on " + got.getConnectionId()
                + " (" + got.getPayload().size() + " bytes)");
            s.facts.put("sequence", Long.toUnsignedString(got.getSequence()));
            s.equal("stream: listener", got.getListenerId(), listenerId);
            s.equal("stream: control id", got.getControlId(), controlId);
            s.equal("stream: message type", got.getMessageType(), "ADT^A01^ADT_A01");
            s.check("stream: payload byte for byte", got.getPayload().equals(ByteString.copyFrom(payload)),
                "got " + got.getPayload().size() + " bytes, want " + payload.length);
          } finally {
            unary(ch).disconnect(DisconnectRequest.newBuilder().setConnectionId(connectionId).build());
          }
        } finally {
          streamCtx.cancel(null);
        }
      } finally {
        unary(ch).stopListener(StopListenerRequest.newBuilder().setListenerId(listenerId).build());
      }
    } finally {
      ch.shutdown();
      if (!ch.awaitTermination(5, TimeUnit.SECONDS)) ch.shutdownNow();
    }
  }

  public static void main(String[] args) {
    Summary s = new Summary();
    try {
      run(s);
    } catch (Exception e) {
      s.error = e.toString();
    }
    s.ok = s.error == null && !s.checks.isEmpty() && s.checks.stream().allMatch(c -> (Boolean) c.get("ok"));
    System.out.println(new Gson().toJson(s));
    System.exit(s.ok ? 0 : 1);
  }
}
