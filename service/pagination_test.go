package service_test

import (
	"encoding/base64"
	"slices"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	switchboardv1 "github.com/switchboard-dev/switchboard/gen/switchboard/v1"
	"github.com/switchboard-dev/switchboard/hl7"
)

// listPage fetches one page: the ids on it and the next page token.
type listPage func(token string) (ids []string, next string, err error)

// allPages follows next_page_token from the first page to the last and
// returns the pages' ids.
func allPages(t *testing.T, what string, fetch listPage) [][]string {
	t.Helper()
	var pages [][]string
	for token := ""; ; {
		ids, next, err := fetch(token)
		if err != nil {
			t.Fatalf("%s, page %d: %v", what, len(pages)+1, err)
		}
		pages = append(pages, ids)
		if next == "" {
			return pages
		}
		if len(pages) > 100 {
			t.Fatalf("%s: no last page after 100", what)
		}
		token = next
	}
}

func (s *server) listenerPage(size int32) listPage {
	return func(token string) ([]string, string, error) {
		resp, err := s.client.ListListeners(s.t.Context(), &switchboardv1.ListListenersRequest{PageSize: size, PageToken: token})
		var ids []string
		for _, l := range resp.GetListeners() {
			ids = append(ids, l.GetListenerId())
		}
		return ids, resp.GetNextPageToken(), err
	}
}

func (s *server) connectionPage(req *switchboardv1.ListConnectionsRequest) listPage {
	return func(token string) ([]string, string, error) {
		req.PageToken = token
		resp, err := s.client.ListConnections(s.t.Context(), req)
		var ids []string
		for _, c := range resp.GetConnections() {
			ids = append(ids, c.GetConnectionId())
		}
		return ids, resp.GetNextPageToken(), err
	}
}

// checkPages asserts pages of at most size ids that together are want, in
// order, each once.
func checkPages(t *testing.T, what string, pages [][]string, size int, want []string) {
	t.Helper()
	var all []string
	for i, p := range pages {
		if len(p) > size || (len(p) < size && i < len(pages)-1) || len(p) == 0 {
			t.Errorf("%s: page %d of %d holds %d ids, want %d (fewer only on the last, never none)", what, i+1, len(pages), len(p), size)
		}
		all = append(all, p...)
	}
	if !slices.Equal(all, want) {
		t.Errorf("%s: pages %v, want %v in order, each once", what, pages, want)
	}
}

// TestListPagination: ListListeners and ListConnections with page_size 2
// over five resources (created out of order) return every id once, ordered
// by id, the last page with an empty next_page_token; filters hold across
// pages; a page_token the server did not issue is INVALID_ARGUMENT naming
// the field.
func TestListPagination(t *testing.T) {
	ctx := testCtx(t)
	s := startServer(t, t.TempDir())
	for _, id := range []string{"l-c", "l-a", "l-e", "l-b", "l-d"} {
		s.startListener(ctx, id, nil)
	}
	peer := startTestPeer(t, ackWith(hl7.AA, ""))
	for _, id := range []string{"c-3", "c-1", "c-5", "c-2", "c-4"} {
		s.connect(ctx, id, peer.addr())
	}
	listeners := []string{"l-a", "l-b", "l-c", "l-d", "l-e"}
	outbound := []string{"c-1", "c-2", "c-3", "c-4", "c-5"}

	checkPages(t, "ListListeners", allPages(t, "ListListeners", s.listenerPage(2)), 2, listeners)
	checkPages(t, "ListConnections", allPages(t, "ListConnections", s.connectionPage(&switchboardv1.ListConnectionsRequest{PageSize: 2})), 2, outbound)
	// A page that ends exactly at the last resource is the last page; zero
	// is the default size.
	for _, size := range []int32{5, 0} {
		checkPages(t, "ListListeners", allPages(t, "ListListeners", s.listenerPage(size)), 5, listeners)
	}

	// Two inbound connections on l-a: the direction filter keeps them off
	// every page, the listener filter keeps only them.
	l, err := s.client.GetListener(ctx, &switchboardv1.GetListenerRequest{ListenerId: "l-a"})
	if err != nil {
		t.Fatal(err)
	}
	dialPeer(t, addr(l.GetListener()))
	dialPeer(t, addr(l.GetListener()))
	var inbound []string
	waitFor(t, func() bool {
		resp, err := s.client.ListConnections(ctx, &switchboardv1.ListConnectionsRequest{ListenerId: "l-a"})
		inbound = inbound[:0]
		for _, c := range resp.GetConnections() {
			inbound = append(inbound, c.GetConnectionId())
		}
		return err == nil && len(inbound) == 2
	})
	checkPages(t, "outbound connections", allPages(t, "outbound connections", s.connectionPage(&switchboardv1.ListConnectionsRequest{
		Direction: switchboardv1.Direction_DIRECTION_OUTBOUND, PageSize: 2})), 2, outbound)
	checkPages(t, "connections of l-a", allPages(t, "connections of l-a", s.connectionPage(&switchboardv1.ListConnectionsRequest{
		ListenerId: "l-a", PageSize: 1})), 1, inbound)
	every := slices.Sorted(slices.Values(append(slices.Clone(outbound), inbound...)))
	checkPages(t, "all connections", allPages(t, "all connections", s.connectionPage(&switchboardv1.ListConnectionsRequest{PageSize: 2})), 2, every)

	// Resources created between pages appear if they sort after the last
	// id seen, and nothing comes twice.
	ids, next, err := s.listenerPage(2)("")
	if err != nil || !slices.Equal(ids, []string{"l-a", "l-b"}) || next == "" {
		t.Fatalf("first page = %v, %q, %v", ids, next, err)
	}
	s.startListener(ctx, "l-0", nil)
	s.startListener(ctx, "l-bb", nil)
	rest := allPages(t, "ListListeners after changes", func(token string) ([]string, string, error) {
		if token == "" {
			token = next
		}
		return s.listenerPage(2)(token)
	})
	checkPages(t, "ListListeners after changes", rest, 2, []string{"l-bb", "l-c", "l-d", "l-e"})

	for _, token := range []string{
		"not a token!",
		base64.RawURLEncoding.EncodeToString([]byte("2:l-a")), // another version
		base64.RawURLEncoding.EncodeToString([]byte("1")),     // too short
		base64.StdEncoding.EncodeToString([]byte("1:l-a")),    // padded standard base64
	} {
		_, errL := s.client.ListListeners(ctx, &switchboardv1.ListListenersRequest{PageToken: token})
		_, errC := s.client.ListConnections(ctx, &switchboardv1.ListConnectionsRequest{PageToken: token})
		for name, err := range map[string]error{"ListListeners": errL, "ListConnections": errC} {
			if status.Code(err) != codes.InvalidArgument || errorInfo(err).GetReason() != "INVALID_ARGUMENT" || !namesField(err, "page_token") {
				t.Errorf("%s with page_token %q = %v; want INVALID_ARGUMENT with a BadRequest naming page_token", name, token, err)
			}
		}
	}
}

// namesField reports whether err carries a BadRequest with a violation of
// field.
func namesField(err error, field string) bool {
	for _, d := range status.Convert(err).Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				if v.GetField() == field && v.GetDescription() != "" {
					return true
				}
			}
		}
	}
	return false
}
