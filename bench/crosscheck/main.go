// Command crosscheck is a second, independent implementation of the load
// suite's baselines and of its load generator, written without any of
// Switchboard's or the suite's code (only net, bufio and Pebble), to check
// that the suite's own are not slower than the simplest correct version of
// each (issue 9). It is run by hand, not by the suite:
//
//	go run ./bench/crosscheck server --kind durable --addr 127.0.0.1:7001 --dir /tmp/xd
//	go run ./bench/crosscheck server --kind ack --addr 127.0.0.1:7002
//	go run ./bench/crosscheck load --addr 127.0.0.1:7001 --conns 8 --duration 5s
//
// The server reads MLLP frames (0x0B payload 0x1C 0x0D) with a bufio.Reader
// and answers each with an HL7 ACK whose MSA-2 is the message's MSH-10;
// with --kind durable it first stores the frame with one
// db.Set(key, frame, pebble.Sync) on a Pebble database with default
// options, from the connection's goroutine. The load generator keeps one
// message in flight per connection and counts ACKs whose MSA-2 matches.
package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: crosscheck server|load [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "server":
		err = server(os.Args[2:])
	case "load":
		err = load(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "crosscheck:", err)
		os.Exit(1)
	}
}

// readFrame returns the next MLLP payload; the slice is valid until the
// next call.
func readFrame(r *bufio.Reader) ([]byte, error) {
	if _, err := r.ReadSlice(0x0b); err != nil { // anything before 0x0B is skipped
		return nil, err
	}
	p, err := r.ReadSlice(0x1c)
	if err != nil {
		return nil, err
	}
	if _, err := r.ReadByte(); err != nil { // the 0x0D
		return nil, err
	}
	return p[:len(p)-1], nil
}

// field returns field n (1-based, MSH-1 being the separator) of the
// message's first segment.
func field(msg []byte, n int) []byte {
	seg, _, _ := bytes.Cut(msg, []byte{'\r'})
	parts := bytes.Split(seg, []byte{'|'})
	if n-1 < len(parts) {
		return parts[n-1]
	}
	return nil
}

func server(args []string) error {
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	kind := fs.String("kind", "durable", "ack or durable")
	addr := fs.String("addr", "127.0.0.1:7001", "listen address")
	dir := fs.String("dir", "", "Pebble directory (durable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var db *pebble.DB
	if *kind == "durable" {
		var err error
		if db, err = pebble.Open(*dir, &pebble.Options{}); err != nil {
			return err
		}
		defer db.Close()
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "crosscheck server", *kind, "on", ln.Addr())
	var seq atomic.Uint64
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			r := bufio.NewReader(c)
			var key [8]byte
			for {
				msg, err := readFrame(r)
				if err != nil {
					return
				}
				if db != nil {
					binary.BigEndian.PutUint64(key[:], seq.Add(1))
					if err := db.Set(key[:], msg, pebble.Sync); err != nil {
						return
					}
				}
				ack := "\x0bMSH|^~\\&|XC|XC|" + string(field(msg, 3)) + "|" + string(field(msg, 4)) + "|" +
					time.Now().Format("20060102150405") + "||ACK|X" + strconv.FormatUint(seq.Load(), 10) + "|P|2.5\rMSA|AA|" +
					string(field(msg, 10)) + "\r\x1c\r"
				if _, err := io.WriteString(c, ack); err != nil {
					return
				}
			}
		}()
	}
}

func load(args []string) error {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:7001", "MLLP server")
	conns := fs.Int("conns", 8, "connections, one message in flight each")
	duration := fs.Duration("duration", 5*time.Second, "measured time")
	warmup := fs.Duration("warmup", time.Second, "unmeasured time before it")
	size := fs.Int("size", 260, "message size in bytes")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var counted, bad atomic.Int64
	start := time.Now()
	from, to := start.Add(*warmup), start.Add(*warmup+*duration)
	var wg sync.WaitGroup
	errc := make(chan error, *conns)
	for w := range *conns {
		wg.Go(func() {
			c, err := net.Dial("tcp", *addr)
			if err != nil {
				errc <- err
				return
			}
			defer c.Close()
			r := bufio.NewReader(c)
			for n := 0; time.Now().Before(to); n++ {
				id := fmt.Sprintf("X%04d%011d", w, n)
				msg := "MSH|^~\\&|XLOAD|XC|SB|T|20261202000000||ADT^A01^ADT_A01|" + id + "|P|2.5\rPID|1||1^^^H^MR||DOE^JANE\r"
				if pad := *size - len(msg) - 8; pad > 0 {
					msg += "NTE|1||" + string(bytes.Repeat([]byte{'x'}, pad)) + "\r"
				}
				if _, err := io.WriteString(c, "\x0b"+msg+"\x1c\r"); err != nil {
					errc <- err
					return
				}
				ack, err := readFrame(r)
				if err != nil {
					errc <- err
					return
				}
				seg := bytes.Split(ack, []byte{'\r'})
				if len(seg) < 2 || !bytes.Equal(field(seg[1], 3), []byte(id)) || !bytes.HasPrefix(seg[1], []byte("MSA|AA|")) && !bytes.HasPrefix(seg[1], []byte("MSA|CA|")) {
					bad.Add(1)
					continue
				}
				if now := time.Now(); now.After(from) && now.Before(to) {
					counted.Add(1)
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
	}
	fmt.Printf("%d conns: %.0f msgs/s (%d bad ACKs)\n", *conns, float64(counted.Load())/duration.Seconds(), bad.Load())
	return nil
}
