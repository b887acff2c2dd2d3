package proxy_test

import (
	"bufio"
	"fmt"
	"net"
	"strings"

	"github.com/popbridge/popbridge/internal/memback"
	"github.com/popbridge/popbridge/proxy"
)

// A Server on a loopback listener, and one client session: log in, see
// the maildrop, retrieve a message (dot-stuffed on the wire) and quit.
// The backend is the in-memory test backend behind a fixed password;
// the binary puts backends/accounts in front of its storage backends.
func ExampleServer() {
	store := memback.New()
	store.Put("alice", memback.Message{UID: "msg-1", Body: "Subject: hello\n\nHi Alice.\n.signature\n"})
	srv := &proxy.Server{Backend: memback.AuthForTest(store, map[string]string{"alice": "secret"})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go srv.Serve(ln)
	defer srv.Close()

	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		panic(err)
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	// reply prints one reply line, or a multi-line reply up to ".".
	reply := func(multi bool) {
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				panic(err)
			}
			line = strings.TrimSuffix(line, "\r\n")
			fmt.Println(strings.TrimSpace("S: " + line))
			if !multi || line == "." || strings.HasPrefix(line, "-ERR") {
				return
			}
		}
	}
	reply(false) // the greeting
	for _, cmd := range []string{"USER alice", "PASS secret", "STAT", "UIDL", "RETR 1", "QUIT"} {
		fmt.Println("C:", cmd)
		fmt.Fprintf(conn, "%s\r\n", cmd)
		reply(cmd == "UIDL" || cmd == "RETR 1")
	}
	// Output:
	// S: +OK POP3 server ready.
	// C: USER alice
	// S: +OK
	// C: PASS secret
	// S: +OK Logged in.
	// C: STAT
	// S: +OK 1 41
	// C: UIDL
	// S: +OK unique-id listing follows
	// S: 1 msg-1
	// S: .
	// C: RETR 1
	// S: +OK 41 octets
	// S: Subject: hello
	// S:
	// S: Hi Alice.
	// S: ..signature
	// S: .
	// C: QUIT
	// S: +OK Logging out, 0 messages deleted.
}
