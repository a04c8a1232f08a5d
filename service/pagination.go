package service

import (
	"encoding/base64"
	"strconv"
)

// Page sizes of the List RPCs (the API validates the upper bound too).
const (
	defaultPageSize = 100
	maxPageSize     = 1000
)

func pageSize(n int32) int {
	if n <= 0 {
		return defaultPageSize
	}
	return min(int(n), maxPageSize)
}

// Page tokens are opaque to clients: the last id of the previous page,
// versioned so the format can change. Lists are ordered by id, so the next
// page is everything after it; resources created or removed between pages
// simply appear or not, and nothing is returned twice.
const pageTokenVersion = "1:"

func encodePageToken(lastID string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(pageTokenVersion + lastID))
}

func decodePageToken(tok string) (string, error) {
	if tok == "" {
		return "", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || len(b) < len(pageTokenVersion) || string(b[:len(pageTokenVersion)]) != pageTokenVersion {
		return "", errInvalid{field: "page_token", msg: "not a page token this server issued"}
	}
	return string(b[len(pageTokenVersion):]), nil
}

// page runs one page of a List: it decodes the token, lists up to a page
// of views after it, converts them and makes the next token.
func page[V, P any](token string, size int32, list func(after string, n int) ([]V, bool), id func(V) string, conv func(V) P) ([]P, string, error) {
	after, err := decodePageToken(token)
	if err != nil {
		return nil, "", err
	}
	views, more := list(after, pageSize(size))
	out := make([]P, 0, len(views))
	for _, v := range views {
		out = append(out, conv(v))
	}
	var next string
	if more {
		next = encodePageToken(id(views[len(views)-1]))
	}
	return out, next, nil
}

// encodeSeqToken and decodeSeqToken are page tokens of lists ordered by
// journal sequence: the last sequence of the previous page.
func encodeSeqToken(last uint64) string { return encodePageToken(strconv.FormatUint(last, 10)) }

func decodeSeqToken(tok string) (uint64, error) {
	s, err := decodePageToken(tok)
	if err != nil || s == "" {
		return 0, err
	}
	seq, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, errInvalid{field: "page_token", msg: "not a page token this server issued"}
	}
	return seq, nil
}
