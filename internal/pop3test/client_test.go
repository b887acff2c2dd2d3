package pop3test_test

import (
	"errors"
	"net"
	"testing"

	"github.com/popbridge/popbridge/internal/pop3test"
)

// TestClientUnstuffs checks the client against a scripted server.
func TestClientUnstuffs(t *testing.T) {
	srv, cli := net.Pipe()
	defer srv.Close()
	go func() {
		srv.Write([]byte("+OK ready\r\n"))
		buf := make([]byte, 64)
		srv.Read(buf) // RETR 1
		srv.Write([]byte("+OK 9 octets\r\n..\r\n...x\r\n.y\r\nz\r\n.\r\n"))
		srv.Read(buf) // LIST
		srv.Write([]byte("-ERR no\r\n"))
		srv.Read(buf) // RETR 2
		srv.Write([]byte("+OK\r\nbare lf\n.\r\n"))
	}()
	c, err := pop3test.NewClient(cli)
	if err != nil {
		t.Fatal(err)
	}
	if c.Greeting != "+OK ready" {
		t.Errorf("greeting %q", c.Greeting)
	}
	status, body, err := c.CmdMulti("RETR 1")
	if err != nil || status != "+OK 9 octets" {
		t.Fatalf("RETR: %q %v", status, err)
	}
	if want := ".\r\n..x\r\ny\r\nz\r\n"; string(body) != want {
		t.Errorf("unstuffed %q, want %q", body, want)
	}
	line, err := c.Cmd("LIST")
	var re *pop3test.ResponseError
	if !errors.As(err, &re) || line != "-ERR no" || re.Line != "-ERR no" {
		t.Errorf("-ERR: %q, %v", line, err)
	}
	if _, _, err := c.CmdMulti("RETR 2"); err == nil {
		t.Error("a bare LF in a multi-line reply was accepted")
	}
}
