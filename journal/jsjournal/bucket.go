package jsjournal

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-dev/switchboard/journal"
)

// Bucket is the JetStream key-value bucket a cluster keeps everything but
// the journal's records in: desired state, leases and members, the outbox,
// consumer positions and answers, each store under its own key prefix.
// They share one bucket, and so one stream, because a write that a lease
// guards (Fence) is checked against the lease's key in the same stream.
type Bucket struct {
	KV      jetstream.KeyValue
	JS      jetstream.JetStream
	Name    string        // the bucket's name; its stream is "KV_" + Name
	Timeout time.Duration // bounds one write or read
}

// OpenBucket creates (or updates) the bucket name with the given replica
// count (0 means 1), file storage and history 1, and returns it. timeout
// bounds each later operation (0 means 5 s).
func OpenBucket(ctx context.Context, js jetstream.JetStream, name string, replicas int, timeout time.Duration) (*Bucket, error) {
	if !validName.MatchString(name) {
		return nil, fmt.Errorf("jsjournal: invalid bucket name %q: letters, digits, '-' and '_' only", name)
	}
	if replicas <= 0 {
		replicas = 1
	}
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:   name,
		History:  1,
		Storage:  jetstream.FileStorage,
		Replicas: replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("jsjournal: bucket %q: %w", name, err)
	}
	return &Bucket{KV: kv, JS: js, Name: name, Timeout: timeout}, nil
}

// Token encodes an id or name as one key token: base64url without
// padding, so ids with '.' (a token separator) or other characters keys do
// not allow stay one token, and different ids stay different keys.
func Token(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// FromToken decodes Token.
func FromToken(t string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(t)
	return string(b), err
}

// Subject is the subject key is stored on in the bucket's stream.
func (b *Bucket) Subject(key string) string { return "$KV." + b.Name + "." + key }

// Fence guards a write: it is stored only while the last write to the
// lease key LeaseKey is still revision Revision, the one that gave the
// writer the lease. The zero Fence guards nothing.
type Fence struct {
	LeaseKey string
	Revision uint64
}

// FenceFunc returns the fence for writes about a resource (typ is
// "listener" or "connection", as in the registry), and false when this
// instance does not hold its lease: the write is then refused with
// journal.ErrFenced without being tried. A nil FenceFunc guards nothing
// (one instance, or tests).
type FenceFunc func(typ, id string) (Fence, bool)

// Put stores value at key, guarded by f. A write refused because the
// lease moved on wraps journal.ErrFenced; a server or connection failure
// wraps journal.ErrUnavailable. It returns the key's new revision.
func (b *Bucket) Put(ctx context.Context, key string, value []byte, f Fence) (uint64, error) {
	return b.publish(ctx, key, value, "", f)
}

// Delete removes key (a delete marker; Get then reports
// jetstream.ErrKeyNotFound), guarded by f.
func (b *Bucket) Delete(ctx context.Context, key string, f Fence) error {
	_, err := b.publish(ctx, key, nil, "DEL", f)
	return err
}

func (b *Bucket) publish(ctx context.Context, key string, value []byte, op string, f Fence) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, b.Timeout)
	defer cancel()
	m := nats.NewMsg(b.Subject(key))
	m.Data = value
	if op != "" {
		m.Header.Set("KV-Operation", op)
	}
	if f.LeaseKey != "" {
		m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, fmt.Sprint(f.Revision))
		m.Header.Set("Nats-Expected-Last-Subject-Sequence-Subject", b.Subject(f.LeaseKey))
	}
	ack, err := b.JS.PublishMsg(ctx, m, jetstream.WithExpectStream("KV_"+b.Name))
	if err != nil {
		return 0, b.Err(err)
	}
	return ack.Sequence, nil
}

// Err maps a JetStream error: a refused expected-sequence check is
// journal.ErrFenced (for a fenced write) , anything but a missing key or a
// cancelled context is journal.ErrUnavailable.
func (b *Bucket) Err(err error) error {
	var apiErr *jetstream.APIError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant):
		return fmt.Errorf("%w: %v", journal.ErrFenced, err)
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, context.Canceled):
		return err
	}
	return fmt.Errorf("%w: %v", journal.ErrUnavailable, err)
}
