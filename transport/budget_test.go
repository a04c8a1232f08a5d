package transport

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/switchboard-dev/switchboard/hl7"
)

// TestMemoryBudgetRefusesWhatDoesNotFit: eight connections each start a
// frame that needs its buffer to grow, against a budget that holds five of
// those buffers. No frame can complete before the test sends its end, so
// exactly five reservations succeed: the other three frames are refused with
// an AR telling the peer to resend later, their connections close for the
// memory limit and nothing of them is stored. The five are stored and
// acknowledged once complete, a small frame is never refused (the idle
// buffer is free), a refused frame sent again once memory is free is
// accepted, and the budget is back at zero when everything has closed.
func TestMemoryBudgetRefusesWhatDoesNotFit(t *testing.T) {
	const conns, fit = 8, 5
	f := Framing{Kind: FramingMLLP, MaxFrameBytes: 6000}
	// The buffer grows once, from the free idle size straight to its
	// maximum, so every frame that gets memory is charged the same.
	charge := int64(NewDecoder(nil, f).maxBuf - initialBufSize)
	budget := NewMemoryBudget(fit*charge + charge/2)
	sink := &memSink{}
	closed := newCloseLog()
	l := startListener(t, ListenerConfig{Conn: ConnConfig{Framing: f, Budget: budget}, Sink: sink, OnClose: closed.onClose})

	peers := make(map[string]*rawPeer, conns)
	frames := make(map[string][]byte, conns)
	ids := make(map[string]string, conns)
	for i := range conns {
		id := fmt.Sprintf("BIG-%d", i)
		p := dialRaw(t, l, f)
		frame := f.WithDefaults().AppendFrame(nil, sizedMsg(id, 4999))
		// Exactly the idle buffer: the server reads all of it, then needs
		// memory for the rest. Sending no more keeps a refused connection
		// from closing with unread bytes (a reset that could eat its AR).
		if _, err := p.nc.Write(frame[:initialBufSize]); err != nil {
			t.Fatal(err)
		}
		peers[p.localAddr()], frames[p.localAddr()], ids[p.localAddr()] = p, frame, id
	}

	refused := map[string]bool{}
	for range conns - fit {
		info := closed.next(t)
		if info.CloseReason != CloseMemoryLimit || info.Counters.FramingErrors != 1 || info.Counters.AcksSent[AckAR] != 1 {
			t.Errorf("refused connection: reason %v, %d framing errors, %d AR; want memory limit, 1, 1",
				info.CloseReason, info.Counters.FramingErrors, info.Counters.AcksSent[AckAR])
		}
		refused[info.RemoteAddr] = true
		p := peers[info.RemoteAddr]
		if a := p.ackOf(); a.Code != hl7.AR || a.ControlID != ids[info.RemoteAddr] || !strings.Contains(a.Text, "resend later") {
			t.Errorf("answer to a refused frame: %s for %q, %q; want AR for %q saying to resend later", a.Code, a.ControlID, a.Text, ids[info.RemoteAddr])
		}
		p.closedByServer()
	}
	waitUntil(t, func() bool { return budget.Used() == fit*charge })
	if len(refused) != conns-fit || budget.Refused() != conns-fit {
		t.Fatalf("%d connections refused, budget counted %d; want %d", len(refused), budget.Refused(), conns-fit)
	}

	// The budget is full, yet a frame that fits the idle buffer is taken.
	small := dialRaw(t, l, f)
	small.send(adt)
	if a := small.ackOf(); a.Code != hl7.AA {
		t.Errorf("small frame while the budget is full: %s, want AA", a.Code)
	}

	for addr, p := range peers {
		if refused[addr] {
			continue
		}
		if _, err := p.nc.Write(frames[addr][initialBufSize:]); err != nil {
			t.Fatal(err)
		}
		if a := p.ackOf(); a.Code != hl7.AA || a.ControlID != ids[addr] {
			t.Errorf("answer to a frame that fit: %s for %q, want AA for %q", a.Code, a.ControlID, ids[addr])
		}
	}
	// Done frames give their memory back before the connection closes.
	waitUntil(t, func() bool { return budget.Used() == 0 })

	// Resent once memory is free, a refused frame is accepted.
	var again string
	for addr := range refused {
		again = addr
		break
	}
	resend := dialRaw(t, l, f)
	if _, err := resend.nc.Write(frames[again]); err != nil {
		t.Fatal(err)
	}
	if a := resend.ackOf(); a.Code != hl7.AA || a.ControlID != ids[again] {
		t.Errorf("resent frame: %s for %q, want AA for %q", a.Code, a.ControlID, ids[again])
	}

	stored := map[string]bool{}
	sink.mu.Lock()
	for _, m := range sink.msgs {
		stored[m.ControlID] = true
	}
	n := len(sink.msgs)
	sink.mu.Unlock()
	if n != fit+2 {
		t.Errorf("sink holds %d messages, want %d", n, fit+2)
	}
	for addr := range refused {
		if stored[ids[addr]] != (addr == again) {
			t.Errorf("%s stored = %v; refused frames are stored only when resent", ids[addr], stored[ids[addr]])
		}
	}

	// A connection closed in the middle of a frame gives its memory back.
	holder := dialRaw(t, l, f)
	if _, err := holder.nc.Write(frames[again][:initialBufSize+1]); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, func() bool { return budget.Used() == charge })
	l.Close()
	if got := budget.Used(); got != 0 {
		t.Errorf("budget holds %d bytes after every connection closed, want 0", got)
	}
	if budget.Peak() > budget.Limit() || budget.Peak() != fit*charge {
		t.Errorf("peak %d, limit %d; want the peak at %d", budget.Peak(), budget.Limit(), fit*charge)
	}
}

// held is what a decoder should have charged to its budget: the part of
// its buffer beyond the free idle size.
func held(d *Decoder) int64 { return max(int64(len(d.buf)-initialBufSize), 0) }

// TestDecoderBudgetAccounting: whatever the read boundaries, a decoder's
// charge is exactly its buffer beyond the idle size after every call; the
// shrink after a large frame gives it back; a frame the budget cannot hold
// is refused with ErrNoMemory (the error keeps the start of the frame for
// the answer) and Release returns what was held, once.
func TestDecoderBudgetAccounting(t *testing.T) {
	f := Framing{Kind: FramingMLLP}
	small := readTestdata(t, "adt_a01_v25.hl7")
	large := readTestdata(t, "oru_r01_embedded_pdf_270k.hl7")
	largeHdr, err := hl7.ParseHeader(large)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("charge follows the buffer", func(t *testing.T) {
		for name, r := range readers(encodeAll(f, small, large, small, large, large, small)) {
			b := NewMemoryBudget(1 << 30)
			d := NewDecoder(r, f)
			d.budget = b
			var peak int64
			for {
				_, err := d.Next()
				if b.Used() != held(d) {
					t.Fatalf("%s: budget used %d, decoder holds %d", name, b.Used(), held(d))
				}
				peak = max(peak, held(d))
				if err == io.EOF {
					break
				}
				if err != nil && !isTimeout(err) {
					t.Fatalf("%s: %v", name, err)
				}
			}
			if b.Used() != 0 || peak == 0 || b.Peak() != peak {
				t.Errorf("%s: at the end used %d, peak %d (decoder peak %d); want 0 and the decoder's peak", name, b.Used(), b.Peak(), peak)
			}
		}
	})

	t.Run("refused", func(t *testing.T) {
		b := NewMemoryBudget(16 << 10)
		d := NewDecoder(bytes.NewReader(f.AppendFrame(nil, large)), f)
		d.budget = b
		_, err := d.Next()
		var fe *FrameError
		if !errors.As(err, &fe) || !errors.Is(err, ErrNoMemory) {
			t.Fatalf("Next = %v, want ErrNoMemory", err)
		}
		if h, err := hl7.ParseHeader(fe.Partial); err != nil || h.ControlID != largeHdr.ControlID {
			t.Errorf("partial header %q, %v; want control id %q", h.ControlID, err, largeHdr.ControlID)
		}
		if b.Used() != held(d) || b.Used() == 0 || b.Refused() != 1 {
			t.Errorf("used %d, decoder holds %d, refused %d; want what it holds, 1 refusal", b.Used(), held(d), b.Refused())
		}
		if _, again := d.Next(); again != err || b.Refused() != 1 {
			t.Errorf("second Next = %v, %d refusals; want the same error and no new reservation", again, b.Refused())
		}
		d.Release()
		d.Release()
		if b.Used() != 0 {
			t.Errorf("used %d after Release, want 0", b.Used())
		}
	})

	t.Run("shared", func(t *testing.T) {
		// Room for one large frame's buffer, not for two.
		b := NewMemoryBudget(600 << 10)
		d1 := NewDecoder(bytes.NewReader(encodeAll(f, large, small)), f)
		d2 := NewDecoder(bytes.NewReader(encodeAll(f, large)), f)
		d1.budget, d2.budget = b, b
		if p, err := d1.Next(); err != nil || len(p) != len(large) {
			t.Fatalf("first decoder: %d bytes, %v", len(p), err)
		}
		if _, err := d2.Next(); !errors.Is(err, ErrNoMemory) {
			t.Fatalf("second decoder while the first holds its buffer: %v, want ErrNoMemory", err)
		}
		if b.Used() != held(d1)+held(d2) || b.Peak() > b.Limit() {
			t.Errorf("used %d, decoders hold %d+%d, peak %d, limit %d", b.Used(), held(d1), held(d2), b.Peak(), b.Limit())
		}
		if _, err := d1.Next(); err != nil { // the small frame: the buffer shrinks
			t.Fatal(err)
		}
		d2.Release()
		if b.Used() != 0 {
			t.Errorf("used %d with both decoders idle, want 0", b.Used())
		}
		d3 := NewDecoder(bytes.NewReader(encodeAll(f, large)), f)
		d3.budget = b
		if p, err := d3.Next(); err != nil || len(p) != len(large) {
			t.Errorf("a third decoder once memory is back: %d bytes, %v", len(p), err)
		}
	})

	t.Run("length prefix", func(t *testing.T) {
		// The buffer grows with the bytes that arrive, as for MLLP, not to
		// the announced length at once: a prefix alone holds nothing of
		// the budget, so a few bytes per connection cannot exhaust it.
		lp := Framing{Kind: FramingLengthPrefix}
		b := NewMemoryBudget(8 << 10)
		frame := encodeAll(lp, large)
		idle := NewDecoder(bytes.NewReader(frame[:lengthPrefixBytes+10]), lp)
		idle.budget = b
		_ = idle.fill() // the prefix and 10 bytes of payload
		idle.scan()
		if b.Used() != 0 || len(idle.buf) != initialBufSize {
			t.Errorf("a bare length prefix: used %d, buffer %d; want nothing charged", b.Used(), len(idle.buf))
		}
		d := NewDecoder(bytes.NewReader(frame), lp)
		d.budget = b
		if _, err := d.Next(); !errors.Is(err, ErrNoMemory) {
			t.Fatalf("Next = %v, want ErrNoMemory", err)
		}
		if b.Used() > b.Limit() || b.Peak() > b.Limit() {
			t.Errorf("used %d, peak %d, over the limit %d", b.Used(), b.Peak(), b.Limit())
		}
		d.Release()
		if b.Used() != 0 {
			t.Errorf("used %d after Release, want 0", b.Used())
		}
	})
}
