package jsjournal

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/switchboard-dev/switchboard/internal/natstest"
	"github.com/switchboard-dev/switchboard/journal"
)

// AnswerStore has service.AnswerStore's methods (that package cannot be
// imported here: it imports this one, through service/cluster).
var _ interface {
	PutAnswer(ctx context.Context, seq uint64, v []byte, durable bool) error
	Answer(ctx context.Context, seq uint64) ([]byte, error)
} = (*AnswerStore)(nil)

// openAnswers opens the answer bucket name on a new connection to url,
// trying for a while right after a restart.
func openAnswers(t *testing.T, url, name string, maxAge time.Duration) *AnswerStore {
	t.Helper()
	_, js := storesConnect(t, url)
	var s *AnswerStore
	storesEventually(t, "OpenAnswers", func() error {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		var err error
		s, err = OpenAnswers(ctx, js, name, 1, maxAge)
		return err
	})
	return s
}

// TestAnswers: an answer reads back at once, durable or not, survives a
// server restart, and is gone (journal.ErrNotFound) once older than the
// bucket's TTL, as a record past retention is.
func TestAnswers(t *testing.T) {
	ctx := t.Context()
	srv := natstest.Start(t, server.Options{})
	s := openAnswers(t, srv.URL(), "answers", time.Hour)
	st, err := s.b.JS.Stream(ctx, "KV_answers")
	if err != nil {
		t.Fatal(err)
	}
	if cfg := st.CachedInfo().Config; cfg.AllowDirect || cfg.MaxAge != time.Hour || cfg.MaxMsgsPerSubject != 1 {
		t.Fatalf("answer stream: AllowDirect %v, MaxAge %v, MaxMsgsPerSubject %d; want false, 1h, 1", cfg.AllowDirect, cfg.MaxAge, cfg.MaxMsgsPerSubject)
	}
	if _, err := s.Answer(ctx, 1); !errors.Is(err, journal.ErrNotFound) {
		t.Fatalf("Answer of nothing = %v, want ErrNotFound", err)
	}
	if err := s.PutAnswer(ctx, 1, []byte("one"), false); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Answer(ctx, 1); err != nil || string(v) != "one" {
		t.Fatalf("unsynced answer = %q, %v", v, err)
	}
	if err := s.PutAnswer(ctx, 2, []byte("two"), true); err != nil {
		t.Fatal(err)
	}
	if err := s.PutAnswer(ctx, 1, []byte("uno"), true); err != nil {
		t.Fatal(err)
	}
	if err := s.PutAnswer(ctx, 0, nil, true); err == nil {
		t.Fatal("PutAnswer(0) succeeded")
	}
	if _, err := s.Answer(ctx, 0); !errors.Is(err, journal.ErrNotFound) {
		t.Fatalf("Answer(0) = %v, want ErrNotFound", err)
	}
	srv.Stop()
	srv.Restart()
	s = openAnswers(t, srv.URL(), "answers", time.Hour)
	for seq, want := range map[uint64]string{1: "uno", 2: "two"} {
		if v, err := s.Answer(ctx, seq); err != nil || string(v) != want {
			t.Fatalf("Answer(%d) after the restart = %q, %v; want %q", seq, v, err, want)
		}
	}
	if _, err := s.Answer(ctx, 3); !errors.Is(err, journal.ErrNotFound) {
		t.Fatalf("Answer(3) = %v, want ErrNotFound", err)
	}

	// The TTL deletes answers as retention deletes records.
	short := openAnswers(t, srv.URL(), "answers-short", time.Second)
	if err := short.PutAnswer(ctx, 7, []byte("seven"), true); err != nil {
		t.Fatal(err)
	}
	if v, err := short.Answer(ctx, 7); err != nil || string(v) != "seven" {
		t.Fatalf("Answer(7) = %q, %v", v, err)
	}
	storesEventually(t, "answer past its TTL", func() error {
		_, err := short.Answer(ctx, 7)
		if errors.Is(err, journal.ErrNotFound) {
			return nil
		}
		return errors.New("answer 7 still there")
	})
	// The long-lived bucket is untouched.
	if v, err := s.Answer(ctx, 2); err != nil || string(v) != "two" {
		t.Fatalf("Answer(2) = %q, %v", v, err)
	}
}

// TestOpenAnswersRefuses: a bad name or a TTL that is not positive is
// refused before anything is created.
func TestOpenAnswersRefuses(t *testing.T) {
	srv := natstest.Start(t, server.Options{})
	_, js := storesConnect(t, srv.URL())
	for _, tc := range []struct {
		name   string
		maxAge time.Duration
	}{{"a.b", time.Hour}, {"ok", 0}, {"ok", -time.Second}} {
		if _, err := OpenAnswers(t.Context(), js, tc.name, 1, tc.maxAge); err == nil {
			t.Errorf("OpenAnswers(%q, %v) succeeded", tc.name, tc.maxAge)
		}
	}
}

// TestAnswersUnavailable: without a server, PutAnswer and Answer fail with
// journal.ErrUnavailable within their timeout; after a restart the store
// works again, with every acknowledged answer there.
func TestAnswersUnavailable(t *testing.T) {
	ctx := t.Context()
	srv := natstest.Start(t, server.Options{})
	s := openAnswers(t, srv.URL(), "answers-down", time.Hour)
	s.SetTimeout(time.Second)
	if err := s.PutAnswer(ctx, 1, []byte("before"), true); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	start := time.Now()
	if err := s.PutAnswer(ctx, 2, []byte("during"), true); !errors.Is(err, journal.ErrUnavailable) {
		t.Fatalf("PutAnswer without a server = %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("PutAnswer without a server took %v", d)
	}
	if _, err := s.Answer(ctx, 1); !errors.Is(err, journal.ErrUnavailable) {
		t.Fatalf("Answer without a server = %v, want ErrUnavailable", err)
	}
	srv.Restart()
	storesEventually(t, "PutAnswer after the restart", func() error {
		return s.PutAnswer(ctx, 3, []byte("after"), true)
	})
	for seq, want := range map[uint64]string{1: "before", 3: "after"} {
		if v, err := s.Answer(ctx, seq); err != nil || string(v) != want {
			t.Fatalf("Answer(%d) after the restart = %q, %v; want %q", seq, v, err, want)
		}
	}
}
