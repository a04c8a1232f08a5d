package peersim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboard-dev/switchboard/hl7"
	"github.com/switchboard-dev/switchboard/transport"
)

const (
	// MaxConns caps the simulator's open connections; more are closed at
	// once. A test peer needs few.
	MaxConns = 256
	// writeTimeout bounds writing one answer.
	writeTimeout = 10 * time.Second
)

// ServerConfig configures a listening peer.
type ServerConfig struct {
	// Address is "host:port" to listen on; port 0 picks a free one.
	Address string
	// Framing of the connections; zero Kind: MLLP.
	Framing transport.Framing
	// Ack is how messages are answered; zero Kind: HL7.
	Ack AckMode
	// Scenario says what to do with each message; nil answers every message
	// positively.
	Scenario *Scenario
	// Logger receives connection events; nil discards them.
	Logger *slog.Logger
	// OnTurn, when set, is called with every message's turn once its
	// action is done (the answer written, the connection closed...), from
	// the connection's goroutine.
	OnTurn func(Exchange)
}

// Exchange is what happened to one received message.
type Exchange struct {
	Turn
	RemoteAddr  string
	ControlID   string // MSH-10, when HL7
	MessageType string // MSH-9, when HL7
	// Code is the code answered; empty when nothing was.
	Code string
	// Err is set when the action could not be done (a write failed).
	Err error
}

// Server is a listening peer. Its accept loop and every connection run in
// goroutines it owns; Close stops and waits for them.
type Server struct {
	cfg    ServerConfig
	policy transport.AckPolicy
	cur    *cursor
	nl     net.Listener
	log    *slog.Logger

	closing chan struct{}
	once    sync.Once
	wg      sync.WaitGroup
	done    chan struct{} // closed once the last turn of a non-repeating script is done
	ackIDs  atomic.Int64

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	stats Stats
}

// Stats counts what a Server did.
type Stats struct {
	Connections int `json:"connections"`
	Messages    int `json:"messages"`
	// Answers counts answers by code; Silent, Closed and Reset count the
	// other actions.
	Answers map[string]int `json:"answers"`
	Silent  int            `json:"silent"`
	Closed  int            `json:"closed"`
	Reset   int            `json:"reset"`
	// Ignored counts HL7 ACKs received, which are never answered nor count
	// as a scenario turn.
	Ignored int `json:"ignored_acks"`
}

// WithDefaults returns cfg with MLLP, HL7 acknowledgements, an empty
// scenario and a discarding logger where it has none.
func (cfg ServerConfig) WithDefaults() ServerConfig {
	cfg.Framing = cfg.Framing.WithDefaults()
	if cfg.Ack.Kind == "" {
		cfg.Ack.Kind = AckHL7
	}
	if cfg.Scenario == nil {
		cfg.Scenario = &Scenario{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return cfg
}

// Validate reports whether cfg (after WithDefaults) is usable: the ack
// mode fits the framing and the scenario fits the ack mode (a
// *ScenarioError then).
func (cfg ServerConfig) Validate() error {
	if err := cfg.Ack.Validate(cfg.Framing); err != nil {
		return err
	}
	return cfg.Scenario.Validate(cfg.Ack)
}

// Listen binds cfg.Address and starts accepting.
func Listen(cfg ServerConfig) (*Server, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	nl, err := net.Listen("tcp", cfg.Address)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg: cfg, policy: cfg.Ack.Policy(), cur: newCursor(cfg.Scenario), nl: nl, log: cfg.Logger,
		closing: make(chan struct{}), done: make(chan struct{}), conns: map[net.Conn]struct{}{},
		stats: Stats{Answers: map[string]int{}},
	}
	if len(cfg.Scenario.Steps) == 0 && !cfg.Scenario.Repeat {
		close(s.done)
	}
	s.wg.Add(1)
	go s.acceptLoop()
	return s, nil
}

// Addr is the bound address.
func (s *Server) Addr() net.Addr { return s.nl.Addr() }

// Done is closed once the last step of a non-repeating scenario has been
// carried out (at once for an empty one); never for a repeating one.
func (s *Server) Done() <-chan struct{} { return s.done }

// Stats returns the counts so far. An answer is counted once written, so
// the client may have it first: after Close the counts are final.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Answers = make(map[string]int, len(s.stats.Answers))
	for k, v := range s.stats.Answers {
		st.Answers[k] = v
	}
	return st
}

// Close stops accepting, closes every connection (pending delays end at
// once) and waits for the goroutines.
func (s *Server) Close() error {
	var err error
	s.once.Do(func() {
		close(s.closing)
		err = s.nl.Close()
		s.mu.Lock()
		for nc := range s.conns {
			_ = nc.Close()
		}
		s.mu.Unlock()
	})
	s.wg.Wait()
	return err
}

func (s *Server) acceptLoop() {
	defer s.wg.Done()
	var backoff time.Duration
	for {
		nc, err := s.nl.Accept()
		if err != nil {
			select {
			case <-s.closing:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: wait a little, then retry.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("accept failed; retrying", "err", err, "backoff", backoff)
			if !s.sleep(backoff) {
				return
			}
			continue
		}
		backoff = 0
		if !s.track(nc) {
			_ = nc.Close()
			continue
		}
		s.wg.Add(1)
		go s.serve(nc)
	}
}

// track registers a connection; false when closing or full.
func (s *Server) track(nc net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.closing:
		return false
	default:
	}
	if len(s.conns) >= MaxConns {
		s.log.Warn("too many connections; closing the new one", "remote_addr", nc.RemoteAddr().String())
		return false
	}
	s.conns[nc] = struct{}{}
	s.stats.Connections++
	return true
}

func (s *Server) untrack(nc net.Conn) {
	s.mu.Lock()
	delete(s.conns, nc)
	s.mu.Unlock()
}

// sleep waits d or until Close; false when closing.
func (s *Server) sleep(d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.closing:
		return false
	}
}

// serve reads one connection's frames and carries out a turn for each.
func (s *Server) serve(nc net.Conn) {
	defer s.wg.Done()
	defer s.untrack(nc)
	defer nc.Close()
	remote := nc.RemoteAddr().String()
	log := s.log.With("remote_addr", remote)
	log.Info("connection opened")
	dec := transport.NewDecoder(nc, s.cfg.Framing)
	defer dec.Release()
	for {
		payload, err := dec.Next()
		if err != nil {
			switch {
			case errors.Is(err, io.EOF):
				log.Info("connection closed by the peer")
			case isClosed(err):
				log.Info("connection closed")
			default:
				log.Warn("connection ended", "err", err)
			}
			return
		}
		ex := Exchange{RemoteAddr: remote}
		h, herr := hl7.ParseHeader(payload)
		if herr == nil {
			ex.ControlID, ex.MessageType = h.ControlID, h.MessageType
		}
		if s.cfg.Ack.Kind == AckHL7 && herr == nil && h.IsAck() {
			// An application ACK from Switchboard: answering it would loop.
			s.count(func(st *Stats) { st.Ignored++ })
			log.Info("ACK received; not answered", "control_id", h.ControlID)
			continue
		}
		ex.Turn = s.cur.next()
		keep := s.do(nc, payload, h, &ex, log)
		if f := s.cfg.OnTurn; f != nil {
			f(ex)
		}
		if ex.Last {
			close(s.done)
		}
		if !keep {
			return
		}
	}
}

// do carries out ex's step for a message; false when the connection is
// closed.
func (s *Server) do(nc net.Conn, payload []byte, h hl7.Header, ex *Exchange, log *slog.Logger) bool {
	st := ex.Step
	s.count(func(c *Stats) { c.Messages++ })
	log = log.With("control_id", ex.ControlID, "turn", ex.N, "step", ex.Index)
	if !s.sleep(st.Delay) {
		return false
	}
	switch st.Action {
	case Silence:
		s.count(func(c *Stats) { c.Silent++ })
		log.Info("message not answered (silence)")
		if st.Pause > 0 {
			log.Info("not reading", "pause", st.Pause)
			return s.sleep(st.Pause)
		}
		return true
	case Close:
		s.count(func(c *Stats) { c.Closed++ })
		log.Info("closing the connection instead of answering")
		return false
	case Reset:
		s.count(func(c *Stats) { c.Reset++ })
		log.Info("resetting the connection instead of answering")
		if tc, ok := nc.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		return false
	}
	answer, closeInstead := s.answer(payload, h, st)
	if closeInstead {
		s.count(func(c *Stats) { c.Closed++ })
		log.Info("no NAK payload; closing the connection instead")
		return false
	}
	if answer == nil {
		s.count(func(c *Stats) { c.Silent++ })
		return true
	}
	_ = nc.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := nc.Write(s.cfg.Framing.AppendFrame(nil, answer)); err != nil {
		ex.Err = err
		log.Warn("answer not written", "err", err)
		return false
	}
	ex.Code = st.code(s.cfg.Ack)
	s.count(func(c *Stats) { c.Answers[ex.Code]++ })
	log.Info("answered", "ack_code", ex.Code)
	return true
}

// answer builds the acknowledgement of payload for step st.
func (s *Server) answer(payload []byte, h hl7.Header, st Step) ([]byte, bool) {
	code := st.code(s.cfg.Ack)
	switch s.cfg.Ack.Kind {
	case AckNone:
		return nil, false
	case AckHL7:
	default:
		return s.cfg.Ack.byteAnswer(payload, code == "NAK")
	}
	switch {
	case st.ControlID != "":
		h.ControlID = st.ControlID
	case st.WrongControlID:
		h.ControlID += "-WRONG"
	}
	req := hl7.AckRequest{
		Code: hl7.AckCode(code), Text: st.Text, ErrorCode: st.ErrorCode,
		ControlID: "PEER" + strconv.FormatInt(s.ackIDs.Add(1), 10), Time: time.Now(),
	}
	if hl7.IsBatch(payload) && st.ControlID == "" && !st.WrongControlID {
		if out, err := hl7.AppendBatchAck(nil, payload, req); err == nil {
			return out, false
		}
	}
	return hl7.AppendAck(nil, h, req), false
}

func (s *Server) count(f func(*Stats)) {
	s.mu.Lock()
	f(&s.stats)
	s.mu.Unlock()
}

// isClosed reports whether err comes from a connection closed here or
// reset by the peer: the ordinary ends of a test peer's connection.
func isClosed(err error) bool {
	var oe *net.OpError
	return errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrUnexpectedEOF) ||
		(errors.As(err, &oe) && oe.Op == "read")
}

// String describes st for the listen command's output.
func (st Stats) String() string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s, %s", plural(st.Connections, "connection"), plural(st.Messages, "message"))
	for _, c := range append(append([]string{}, hl7Codes...), byteCodes...) {
		if n := st.Answers[c]; n > 0 {
			fmt.Fprintf(&b, ", %s %d", c, n)
		}
	}
	for _, x := range []struct {
		name string
		n    int
	}{{"silent", st.Silent}, {"closed", st.Closed}, {"reset", st.Reset}, {"ACKs ignored", st.Ignored}} {
		if x.n > 0 {
			fmt.Fprintf(&b, ", %s %d", x.name, x.n)
		}
	}
	return b.String()
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return strconv.Itoa(n) + " " + what + "s"
}

// ServeUntil runs s until ctx ends or, when untilDone, until the scenario is
// done, then closes it.
func (s *Server) ServeUntil(ctx context.Context, untilDone bool) error {
	done := s.done
	if !untilDone {
		done = nil
	}
	select {
	case <-ctx.Done():
	case <-done:
	}
	return s.Close()
}
