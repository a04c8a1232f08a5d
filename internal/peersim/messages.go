package peersim

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/switchboard-dev/switchboard/transport"
)

// Message is one message to send and where it came from.
type Message struct {
	// Source is "file" or "file#n" for the n-th message of a file.
	Source  string
	Payload []byte
}

// ReadMessages reads the messages of files and directories in order; "-"
// is standard input (stdin). A directory contributes its regular files in
// name order, hidden ones (".name") left out, without descending. Each
// file is split with Split.
func ReadMessages(paths []string, stdin io.Reader) ([]Message, error) {
	var out []Message
	for _, p := range paths {
		if p == "-" {
			data, err := io.ReadAll(io.LimitReader(stdin, transport.MaxFrameBytesLimit+1))
			if err != nil {
				return nil, fmt.Errorf("standard input: %w", err)
			}
			out = append(out, split("stdin", data)...)
			continue
		}
		fi, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		if !fi.IsDir() {
			msgs, err := readFile(p)
			if err != nil {
				return nil, err
			}
			out = append(out, msgs...)
			continue
		}
		entries, err := os.ReadDir(p)
		if err != nil {
			return nil, err
		}
		names := make([]string, 0, len(entries))
		for _, e := range entries {
			if e.Type().IsRegular() && !strings.HasPrefix(e.Name(), ".") {
				names = append(names, e.Name())
			}
		}
		slices.Sort(names)
		for _, n := range names {
			msgs, err := readFile(filepath.Join(p, n))
			if err != nil {
				return nil, err
			}
			out = append(out, msgs...)
		}
	}
	return out, nil
}

func readFile(name string) ([]Message, error) {
	fi, err := os.Stat(name)
	if err != nil {
		return nil, err
	}
	if fi.Size() > transport.MaxFrameBytesLimit {
		return nil, fmt.Errorf("%s: larger than %d bytes, the largest message Switchboard takes", name, transport.MaxFrameBytesLimit)
	}
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, err
	}
	return split(name, data), nil
}

func split(source string, data []byte) []Message {
	parts := Split(data)
	out := make([]Message, len(parts))
	for i, p := range parts {
		src := source
		if len(parts) > 1 {
			src += "#" + strconv.Itoa(i+1)
		}
		out[i] = Message{Source: src, Payload: p}
	}
	return out
}

// Split cuts the contents of a file into messages. HL7 files (the first
// non-blank line starts with MSH) hold one message per MSH segment; their
// line ends (CR, LF or CRLF, as editors leave them) become CR, HL7's
// segment terminator, and blank lines are dropped. A file starting with a
// batch header (FHS or BHS) is one batch message, with line ends made CR
// likewise. Anything else is one message, sent byte for byte. An empty file
// holds none.
func Split(data []byte) [][]byte {
	segs := segments(data)
	if len(segs) == 0 {
		return nil
	}
	first := segs[0]
	isHeader := func(seg []byte, id string) bool { return len(seg) > 3 && string(seg[:3]) == id }
	switch {
	case isHeader(first, "FHS"), isHeader(first, "BHS"):
		return [][]byte{join(segs)}
	case !isHeader(first, "MSH"):
		return [][]byte{data}
	}
	var out [][]byte
	start := 0
	for i := 1; i <= len(segs); i++ {
		if i == len(segs) || isHeader(segs[i], "MSH") {
			out = append(out, join(segs[start:i]))
			start = i
		}
	}
	return out
}

// segments splits data at CR, LF and CRLF, dropping blank lines and a
// UTF-8 byte order mark.
func segments(data []byte) [][]byte {
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	var segs [][]byte
	for len(data) > 0 {
		i := bytes.IndexAny(data, "\r\n")
		if i < 0 {
			i = len(data)
		}
		if seg := data[:i]; len(bytes.TrimSpace(seg)) > 0 {
			segs = append(segs, seg)
		}
		if i == len(data) {
			break
		}
		data = data[i+1:]
	}
	return segs
}

func join(segs [][]byte) []byte {
	var b bytes.Buffer
	for _, s := range segs {
		b.Write(s)
		b.WriteByte('\r')
	}
	return b.Bytes()
}
