// Package observe is what lets people see inside Switchboard: Prometheus
// metrics, OpenTelemetry traces, the event bus behind WatchEvents, and the
// admin HTTP address that serves them. It is fed by transport's Observer,
// the registry and the journal; transport never imports it.
package observe

import "github.com/switchboard-dev/switchboard/transport"

// Join returns an Observer that calls, for each event, the func of every
// given Observer that has one, in order. Nil Observers are skipped; Join
// returns nil when none is left, and the one itself when only one is.
func Join(obs ...*transport.Observer) *transport.Observer {
	var all []*transport.Observer
	for _, o := range obs {
		if o != nil {
			all = append(all, o)
		}
	}
	switch len(all) {
	case 0:
		return nil
	case 1:
		return all[0]
	}
	j := &transport.Observer{}
	for _, o := range all {
		j.ConnOpened = chain1(j.ConnOpened, o.ConnOpened)
		j.FrameReceived = chain3(j.FrameReceived, o.FrameReceived)
		j.AckSent = chain2(j.AckSent, o.AckSent)
		j.FrameAnswered = chain4(j.FrameAnswered, o.FrameAnswered)
		j.Duplicate = chain2(j.Duplicate, o.Duplicate)
		j.SendDone = chain3(j.SendDone, o.SendDone)
		j.FramingError = chain2(j.FramingError, o.FramingError)
		j.ConnClosed = chain2(j.ConnClosed, o.ConnClosed)
		j.ConnRejected = chain3(j.ConnRejected, o.ConnRejected)
	}
	return j
}

func chain1[A any](f, g func(A)) func(A) {
	switch {
	case f == nil:
		return g
	case g == nil:
		return f
	}
	return func(a A) { f(a); g(a) }
}

func chain2[A, B any](f, g func(A, B)) func(A, B) {
	switch {
	case f == nil:
		return g
	case g == nil:
		return f
	}
	return func(a A, b B) { f(a, b); g(a, b) }
}

func chain3[A, B, C any](f, g func(A, B, C)) func(A, B, C) {
	switch {
	case f == nil:
		return g
	case g == nil:
		return f
	}
	return func(a A, b B, c C) { f(a, b, c); g(a, b, c) }
}

func chain4[A, B, C, D any](f, g func(A, B, C, D)) func(A, B, C, D) {
	switch {
	case f == nil:
		return g
	case g == nil:
		return f
	}
	return func(a A, b B, c C, d D) { f(a, b, c, d); g(a, b, c, d) }
}
