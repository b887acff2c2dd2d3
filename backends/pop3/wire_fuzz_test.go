package pop3

import (
	"bytes"
	"context"
	"io"
	"net"
	"testing"
	"time"
)

// retrAll runs RETR against a server that sends wire in pieces of step
// octets and then "+OK next": with pass, through WriteWireTo first (its
// lines unstuffed here) and Read for the rest; without, through Read only.
// next is the line read after the reply.
func retrAll(t *testing.T, wire []byte, step int, pass bool) (got []byte, msg int64, next string, err error) {
	c, rc := pipeRetr(t, string(wire), step, false)
	defer c.conn.Close()
	if pass {
		var out bytes.Buffer
		var eof bool
		msg, eof, err = rc.(*dotReader).WriteWireTo(&out)
		if err != nil {
			return nil, 0, "", err
		}
		for _, l := range bytes.SplitAfter(out.Bytes(), []byte("\r\n")) {
			got = append(got, bytes.TrimPrefix(l, []byte("."))...)
		}
		if int64(len(got)) != msg {
			t.Fatalf("WriteWireTo: msg %d, wrote %d octets of message", msg, len(got))
		}
		if !eof {
			rest, err := io.ReadAll(rc)
			if err != nil {
				return nil, 0, "", err
			}
			got = append(got, rest...)
		}
	} else {
		got, err = io.ReadAll(rc)
		msg = int64(len(got))
	}
	if err == nil {
		// The line after the reply's end: where each path left the stream.
		l, lerr := c.readLine()
		if lerr != nil {
			t.Fatalf("next line: %v", lerr)
		}
		next = string(l)
	}
	return got, msg, next, err
}

// FuzzWireWriterTo: the verified pass-through followed by Read gives the
// message Read alone gives, and counts the octets the pass-through wrote
// as Read would have returned them.
func FuzzWireWriterTo(f *testing.F) {
	for _, s := range []string{"a\r\n", "..\r\n.x\r\n\r\n", "a\nb\r\n", "a\rb\r\n\r\r\n", ".\n", "x"} {
		f.Add([]byte(s), uint8(3))
	}
	f.Fuzz(func(t *testing.T, body []byte, step uint8) {
		wire := append(append([]byte{}, body...), "\r\n.\r\n"...)
		s := int(step%64) + 1
		want, _, wantNext, err := retrAll(t, wire, s, false)
		if err != nil {
			t.Fatal(err)
		}
		got, msg, next, err := retrAll(t, wire, s, true)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) || next != wantNext {
			t.Fatalf("pass-through gives %q then %q, Read %q then %q", got, next, want, wantNext)
		}
		// msg counts the pass-through's octets; Read's rest is not in it.
		if msg > int64(len(got)) {
			t.Fatalf("msg %d > %d octets", msg, len(got))
		}
	})
}

// pipeRetr sends RETR 1 to a server that answers +OK, then wire in
// pieces of step octets, then "+OK next" (or, with cut, hangs up), and
// returns the client and the message stream.
func pipeRetr(t *testing.T, wire string, step int, cut bool) (*Client, io.ReadCloser) {
	t.Helper()
	server, client := net.Pipe()
	go io.Copy(io.Discard, server)
	go func() {
		server.Write([]byte("+OK\r\n"))
		for i := 0; i < len(wire); i += step {
			server.Write([]byte(wire[i:min(i+step, len(wire))]))
		}
		if cut {
			server.Close()
			return
		}
		server.Write([]byte("+OK next\r\n"))
	}()
	c := &Client{timeout: 5 * time.Second}
	c.setConn(client)
	rc, err := c.Retr(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	return c, rc
}
