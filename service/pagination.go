package service

import "encoding/base64"

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
